//! The dashboard: the files `scripts/ui-build.sh` builds from `ui/src` into `ui/dist`
//! (committed), embedded in the binary and served at [`routes::UI`] without a token. They hold
//! no data: the page asks for the token and sends it as a bearer token on its calls to the
//! protected routes.

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::routes;
use crate::server::ApiError;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// The page and what it loads; `index.html` names the others by their `/ui/...` paths.
const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../../ui/dist/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../ui/dist/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../../ui/dist/app.css"),
    },
];

/// Scripts and styles only from this server, data only from this API, never in a frame.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The dashboard's routes, open to anyone.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(routes::UI, get(index))
        .route(routes::UI_INDEX, get(index))
        .route(routes::UI_ASSET, get(asset))
}

async fn index() -> Response {
    serve(&ASSETS[0])
}

async fn asset(name: Result<Path<String>, axum::extract::rejection::PathRejection>) -> Response {
    let Ok(Path(name)) = name else {
        return ApiError::NotFound("no such file of the dashboard".into()).into_response();
    };
    match ASSETS.iter().find(|asset| asset.name == name) {
        Some(asset) => serve(asset),
        None => ApiError::NotFound(format!("the dashboard has no file `{name}`")).into_response(),
    }
}

fn serve(asset: &Asset) -> Response {
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    // Small files, rebuilt with the binary: always revalidated, so an upgrade shows at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file the page names by a `/ui/` path is embedded, and the page is the first.
    #[test]
    fn the_page_loads_only_embedded_files() {
        assert_eq!(ASSETS[0].name, "index.html");
        let page = std::str::from_utf8(ASSETS[0].body).expect("utf-8");
        let named: Vec<&str> = page
            .split("\"/ui/")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();
        assert!(
            named.contains(&"app.js") && named.contains(&"app.css"),
            "{named:?}"
        );
        for name in named {
            assert!(
                ASSETS.iter().any(|asset| asset.name == name),
                "index.html loads /ui/{name}, which is not embedded"
            );
        }
    }
}

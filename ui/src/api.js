// Calls to the processor's API with the bearer token the user entered, kept in this tab's
// sessionStorage only. Every failure becomes an ApiError whose message says, in words, what
// went wrong: the page shows it where the data would be.

const TOKEN_KEY = 'dataflow.token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(message, { status = 0, code = 'network' } = {}) {
    super(message);
    this.status = status;
    this.code = code;
  }

  get unauthorized() {
    return this.status === 401;
  }
}

/** `method path` with the token; the parsed JSON answer (the text with `{ text: true }`), or an
 * ApiError. */
export async function call(method, path, body, { text: asText = false } = {}) {
  const headers = { Accept: asText ? 'text/plain' : 'application/json' };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (error) {
    throw new ApiError(`cannot reach the processor (${method} ${path}): ${error.message}`);
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) {
    const code = json?.code ?? `http_${response.status}`;
    if (response.status === 401) {
      throw new ApiError(
        'the processor refused the token (401 unauthorized): enter the token of its API ' +
          '(the value of api.token_env)',
        { status: 401, code },
      );
    }
    const message = json?.message ?? (text.trim() || response.statusText);
    throw new ApiError(`${method} ${path} failed: ${response.status} ${code}: ${message}`, {
      status: response.status,
      code,
    });
  }
  if (asText) return text;
  if (json === null && text) {
    throw new ApiError(`${method} ${path}: the answer is not JSON`, {
      status: response.status,
      code: 'bad_answer',
    });
  }
  return json;
}

export const get = (path) => call('GET', path);
export const post = (path, body) => call('POST', path, body);
export const getText = (path) => call('GET', path, undefined, { text: true });

/** A path segment, percent-encoded (operator names hold brackets). */
export const segment = (value) => encodeURIComponent(String(value));

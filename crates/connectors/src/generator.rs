//! The built-in event generator: deterministic, seekable streams of synthetic events.
//!
//! Event `i` of a generator is a pure function of its [`GeneratorConfig`] and of `i`: every draw
//! comes from a small random number generator seeded by mixing the seed with the index. So
//! [`Generator::seek`] is O(1), and a pipeline restored from a checkpoint that stored
//! [`Generator::position`] replays exactly the events it would have seen.
//!
//! Four profiles are built in:
//!
//! * [`Profile::Bids`], after the Nexmark benchmark: bids on a slowly rotating set of active
//!   auctions, with skewed prices and weighted sales channels.
//! * [`Profile::Nexmark`]: the Nexmark benchmark's own stream of persons, auctions and bids in
//!   its proportions 1:3:46, every key naming an entity generated before it (see
//!   [`Generator::schema`] for the one payload schema the three kinds share).
//! * [`Profile::Clicks`]: a user click stream, mostly `user_click` events with some `page_view`s.
//! * [`Profile::Cards`]: card charges, for the fraud pattern.
//!
//! Event times advance at [`GeneratorConfig::events_per_second`] from
//! [`GeneratorConfig::start_time`], each pulled back by up to
//! [`GeneratorConfig::max_disorder_ms`], so a watermark that allows that much lateness sees no
//! late events.
//!
//! ```
//! use dataflow_connectors::generator::{Generator, GeneratorConfig, Profile};
//!
//! let mut generator = Generator::new(GeneratorConfig {
//!     profile: Profile::Clicks,
//!     count: Some(10),
//!     ..GeneratorConfig::default()
//! })
//! .unwrap();
//! let mut events = Vec::new();
//! assert_eq!(generator.next_batch(100, &mut events), 10);
//! assert_eq!(events[3], generator.event(3));
//! ```

use std::fmt;
use std::io::Write;
use std::str::FromStr;
use std::sync::Arc;

use dataflow_event::json::Encoder;
use dataflow_event::{Event, FieldType, Layout, Payload, Schema, Value};

use crate::config::Settings;
use crate::registry::SourceKind;
use crate::side::SideRecord;
use crate::source::{PartitionPosition, Poll, Source};
use crate::{ConnectorError, Result};

/// 2024-01-01T00:00:00Z in epoch milliseconds: the default time of event 0.
pub const DEFAULT_START_TIME: i64 = 1_704_067_200_000;

/// The id of the first auction (as in Nexmark).
pub const FIRST_AUCTION_ID: u64 = 1_000;

/// The id of the first bidder (as in Nexmark).
pub const FIRST_BIDDER_ID: u64 = 1_000;

/// The number of events after which the window of active auctions moves on by one: the
/// auctions bid on by event `i` are `FIRST_AUCTION_ID + i / AUCTION_ROTATION_EVENTS` plus
/// `0..auctions`.
pub const AUCTION_ROTATION_EVENTS: u64 = 100;

/// Nexmark: the id of the first person.
pub const FIRST_PERSON_ID: u64 = 1_000;

/// Nexmark: the id of the first category; auctions fall in `NEXMARK_CATEGORIES` of them.
pub const FIRST_CATEGORY_ID: u64 = 10;

/// Nexmark: the number of auction categories.
pub const NEXMARK_CATEGORIES: u64 = 5;

/// Nexmark: out of every [`NEXMARK_CYCLE`] events, the first is a person, the next three are
/// auctions and the other 46 are bids (the benchmark's proportions 1:3:46).
pub const NEXMARK_CYCLE: u64 = 50;

/// Nexmark: how many of the newest auctions a bid that is not on the hot auction may name.
pub const NEXMARK_IN_FLIGHT_AUCTIONS: u64 = 100;

/// Nexmark: how many of the newest persons a bidder or seller that is not hot may be.
pub const NEXMARK_ACTIVE_PEOPLE: u64 = 1_000;

/// Nexmark: one bid in `HOT_AUCTION_RATIO` names a recent auction, the others the hot one.
const HOT_AUCTION_RATIO: u64 = 2;

/// Nexmark: one bidder (and one seller) in `HOT_PERSON_RATIO` is a recent person, the others
/// the hot one.
const HOT_PERSON_RATIO: u64 = 4;

/// Nexmark: one bid in `HOT_CHANNEL_RATIO` comes from a channel of its own.
const HOT_CHANNEL_RATIO: u64 = 100;

/// Nexmark: the channels most bids come from.
const NEXMARK_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

/// Nexmark: what persons are named, first and last.
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];

/// Nexmark: where persons live.
const CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];

/// How often (in events) [`Generator::write_jsonl`] reports progress.
pub const PROGRESS_EVERY: u64 = 65_536;

/// Bytes buffered by [`Generator::write_jsonl`] between writes.
const FLUSH_BYTES: usize = 256 * 1024;

/// Up to this many user ids are built once, when the generator is created.
const USER_CACHE_LIMIT: u64 = 65_536;

/// Up to this many card ids are built once, when the generator is created.
const CARD_CACHE_LIMIT: u64 = 1 << 20;

/// Sales channels of bids, with their weights in percent.
const CHANNELS: [(&str, u64); 4] = [("web", 50), ("mobile", 30), ("api", 15), ("partner", 5)];

/// Pages of the click stream, with their weights in percent.
const PAGES: [(&str, u64); 10] = [
    ("/home", 20),
    ("/search", 15),
    ("/catalog", 12),
    ("/product", 18),
    ("/cart", 10),
    ("/checkout", 5),
    ("/account", 6),
    ("/help", 4),
    ("/blog", 6),
    ("/login", 4),
];

/// The fields of the Nexmark profile's one schema, all nullable: see [`Generator::schema`].
pub const NEXMARK_FIELDS: &[(&str, FieldType)] = &[
    ("id", FieldType::Int),
    ("name", FieldType::String),
    ("email_address", FieldType::String),
    ("credit_card", FieldType::String),
    ("city", FieldType::String),
    ("state", FieldType::String),
    ("item_name", FieldType::String),
    ("description", FieldType::String),
    ("initial_bid", FieldType::Int),
    ("reserve", FieldType::Int),
    ("date_time", FieldType::Timestamp),
    ("expires", FieldType::Timestamp),
    ("seller", FieldType::Int),
    ("category", FieldType::Int),
    ("auction", FieldType::Int),
    ("bidder", FieldType::Int),
    ("price", FieldType::Int),
    ("channel", FieldType::String),
    ("url", FieldType::String),
];

/// What kind of events a generator makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Nexmark-like auction bids: `auction`, `bidder`, `price` (cents), `channel`, `url`.
    Bids,
    /// A user click stream: `user_id`, `page`, `duration_ms`.
    Clicks,
    /// Card transactions, for the fraud pattern: `card`, `amount` (a float), `merchant`; one
    /// in twenty charges is small (under 2), three in a hundred large (500 and more).
    Cards,
    /// The Nexmark benchmark's persons, auctions and bids (1:3:46), in one schema: see
    /// [`Generator::schema`].
    Nexmark,
}

impl Profile {
    /// The name used in configs and event ids (`bids`, `clicks`).
    pub fn name(self) -> &'static str {
        match self {
            Profile::Bids => "bids",
            Profile::Clicks => "clicks",
            Profile::Cards => "cards",
            Profile::Nexmark => "nexmark",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = ConnectorError;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "bids" | "bid" => Ok(Profile::Bids),
            "clicks" | "click" => Ok(Profile::Clicks),
            "cards" | "card" => Ok(Profile::Cards),
            "nexmark" => Ok(Profile::Nexmark),
            other => Err(ConnectorError::InvalidGenerator(format!(
                "unknown profile `{other}`: expected bids, clicks, cards or nexmark"
            ))),
        }
    }
}

/// What a [`Generator`] makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratorConfig {
    /// The kind of events.
    pub profile: Profile,
    /// The seed: the same seed gives the same events.
    pub seed: u64,
    /// How many events there are; `None` for an unbounded stream.
    pub count: Option<u64>,
    /// The event time of event 0, in epoch milliseconds.
    pub start_time: i64,
    /// Event-time density: event `i` is based at `start_time + i * 1000 / events_per_second`.
    pub events_per_second: u64,
    /// Each event's time is its base time minus a uniform draw from `0..=max_disorder_ms`.
    pub max_disorder_ms: i64,
    /// Bids: how many distinct auctions are active at any time. (Nexmark keeps the benchmark's
    /// own numbers: [`NEXMARK_IN_FLIGHT_AUCTIONS`], [`NEXMARK_ACTIVE_PEOPLE`].)
    pub auctions: u64,
    /// Bids: how many distinct bidders there are.
    pub bidders: u64,
    /// Clicks: how many distinct users there are; cards: how many distinct cards.
    pub users: u64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            profile: Profile::Bids,
            seed: 0,
            count: None,
            start_time: DEFAULT_START_TIME,
            events_per_second: 1_000,
            max_disorder_ms: 2_000,
            auctions: 1_000,
            bidders: 10_000,
            users: 50,
        }
    }
}

/// Strings shared by many events, built once so that events only clone their `Arc`s.
#[derive(Clone, Debug)]
struct Names {
    bid: Arc<str>,
    user_click: Arc<str>,
    page_view: Arc<str>,
    charge: Arc<str>,
    person: Arc<str>,
    auction: Arc<str>,
    /// Nexmark: every first and last name, `FIRST_NAMES[i / 9] LAST_NAMES[i % 9]`.
    full_names: Vec<Arc<str>>,
    cities: Vec<Arc<str>>,
    states: Vec<Arc<str>>,
    /// Nexmark: the hot channels with their urls.
    nexmark_channels: Vec<(Arc<str>, Arc<str>)>,
    channels: Vec<(Arc<str>, u64)>,
    pages: Vec<(Arc<str>, u64)>,
    users: Vec<Arc<str>>,
}

impl Names {
    fn new(config: &GeneratorConfig) -> Names {
        let users = match config.profile {
            Profile::Clicks if config.users <= USER_CACHE_LIMIT => (0..config.users)
                .map(|n| Arc::from(user_id(n).as_str()))
                .collect(),
            Profile::Cards if config.users <= CARD_CACHE_LIMIT => (0..config.users)
                .map(|n| Arc::from(card_id(n).as_str()))
                .collect(),
            _ => Vec::new(),
        };
        Names {
            bid: Arc::from("bid"),
            user_click: Arc::from("user_click"),
            page_view: Arc::from("page_view"),
            charge: Arc::from("charge"),
            person: Arc::from("person"),
            auction: Arc::from("auction"),
            full_names: FIRST_NAMES
                .iter()
                .flat_map(|first| LAST_NAMES.iter().map(move |last| format!("{first} {last}")))
                .map(|name| Arc::from(name.as_str()))
                .collect(),
            cities: CITIES.iter().map(|&city| Arc::from(city)).collect(),
            states: STATES.iter().map(|&state| Arc::from(state)).collect(),
            nexmark_channels: NEXMARK_CHANNELS
                .iter()
                .enumerate()
                .map(|(number, &name)| {
                    let url =
                        format!("https://www.nexmark.com/item.htm?query=1&channel_id={number}");
                    (Arc::from(name), Arc::from(url.as_str()))
                })
                .collect(),
            channels: CHANNELS
                .iter()
                .map(|&(name, weight)| (Arc::from(name), weight))
                .collect(),
            pages: PAGES
                .iter()
                .map(|&(name, weight)| (Arc::from(name), weight))
                .collect(),
            users,
        }
    }
}

/// A deterministic, seekable source of synthetic events. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Generator {
    config: GeneratorConfig,
    schema: Arc<Schema>,
    /// The seed, mixed once.
    key: u64,
    position: u64,
    names: Names,
}

impl Generator {
    /// A generator for `config`, positioned at event 0.
    pub fn new(config: GeneratorConfig) -> Result<Self> {
        let invalid = |message: &str| Err(ConnectorError::InvalidGenerator(message.to_string()));
        if config.events_per_second == 0 {
            return invalid("events_per_second must be greater than 0");
        }
        if config.max_disorder_ms < 0 {
            return invalid("max_disorder_ms must not be negative");
        }
        match config.profile {
            Profile::Bids if config.auctions == 0 => {
                return invalid("auctions must be greater than 0")
            }
            Profile::Bids if config.bidders == 0 => {
                return invalid("bidders must be greater than 0")
            }
            Profile::Clicks | Profile::Cards if config.users == 0 => {
                return invalid("users must be greater than 0")
            }
            _ => {}
        }
        let schema = Arc::new(Generator::schema(config.profile));
        let salt = match config.profile {
            Profile::Bids => 0x6269_6473,
            Profile::Clicks => 0x636c_6963_6b73,
            Profile::Cards => 0x0063_6172_6473,
            Profile::Nexmark => 0x006e_6578_6d61_726b,
        };
        Ok(Generator {
            key: mix64(config.seed ^ mix64(salt)),
            names: Names::new(&config),
            schema,
            position: 0,
            config,
        })
    }

    /// The payload schema of `profile`'s events.
    ///
    /// The three kinds of Nexmark events share one schema, the union of their fields in the
    /// order of [`NEXMARK_FIELDS`]: a person sets `id`, `name`, `email_address`, `credit_card`,
    /// `city`, `state` and `date_time`; an auction `id`, `item_name`, `description`,
    /// `initial_bid`, `reserve`, `date_time`, `expires`, `seller` and `category`; a bid
    /// `auction`, `bidder`, `price`, `channel`, `url` and `date_time`. Every other field is null,
    /// and the event's type (`type` in expressions) says which kind it is: `person`, `auction`
    /// or `bid`.
    pub fn schema(profile: Profile) -> Schema {
        let fields: &[(&str, FieldType)] = match profile {
            Profile::Bids => &[
                ("auction", FieldType::Int),
                ("bidder", FieldType::Int),
                ("price", FieldType::Int),
                ("channel", FieldType::String),
                ("url", FieldType::String),
            ],
            Profile::Clicks => &[
                ("user_id", FieldType::String),
                ("page", FieldType::String),
                ("duration_ms", FieldType::Int),
            ],
            Profile::Cards => &[
                ("card", FieldType::String),
                ("amount", FieldType::Float),
                ("merchant", FieldType::String),
            ],
            Profile::Nexmark => NEXMARK_FIELDS,
        };
        let nullable = profile == Profile::Nexmark;
        Schema::from_fields(fields.iter().map(|&(name, ty)| dataflow_event::Field {
            name: name.into(),
            ty,
            nullable,
        }))
        .expect("the built-in schemas have unique, non-empty names")
    }

    /// The layout of this generator's events.
    pub fn layout(&self) -> Layout {
        Layout::Row(Arc::clone(&self.schema))
    }

    /// The configuration.
    pub fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    /// The time event `index` is based at, before disorder:
    /// `start_time + index * 1000 / events_per_second`, saturating at the ends of `i64`.
    pub fn base_time(&self, index: u64) -> i64 {
        let offset = i128::from(index) * 1000 / i128::from(self.config.events_per_second.max(1));
        let time = i128::from(self.config.start_time) + offset;
        i64::try_from(time).unwrap_or(if time < 0 { i64::MIN } else { i64::MAX })
    }

    /// Event `index`: always the same event for the same configuration and index. Its
    /// processing time is 0, for the source to stamp.
    pub fn event(&self, index: u64) -> Event {
        let mut rng = SplitMix64(mix64(index.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ self.key));
        let max_disorder = u64::try_from(self.config.max_disorder_ms).unwrap_or(0);
        let disorder = i64::try_from(rng.below(max_disorder.saturating_add(1))).unwrap_or(i64::MAX);
        let event_time = self.base_time(index).saturating_sub(disorder);
        let (kind, values) = match self.config.profile {
            Profile::Bids => self.bid(index, &mut rng),
            Profile::Clicks => self.click(&mut rng),
            Profile::Cards => self.charge(&mut rng),
            Profile::Nexmark => self.nexmark(index, event_time, &mut rng),
        };
        // A Nexmark event has no id of its own: persons and auctions carry theirs in the
        // payload's `id`, which is also the field a JSON Lines reader takes ids from.
        let id = (self.config.profile != Profile::Nexmark).then(|| {
            let mut id = StackStr::new();
            id.push_str(self.config.profile.name());
            id.push_str("-");
            id.push_u64(index);
            Arc::from(id.as_str())
        });
        Event {
            id,
            kind: Some(kind),
            event_time,
            processing_time: 0,
            headers: None,
            key: None,
            payload: Payload::Row(values),
        }
    }

    fn bid(&self, index: u64, rng: &mut SplitMix64) -> (Arc<str>, Vec<Value>) {
        let auctions = self.config.auctions;
        // A quarter of the bids go to the newest 2% of the active auctions: hot keys.
        let offset = if rng.below(4) == 0 {
            auctions - 1 - rng.below(auctions.div_ceil(50))
        } else {
            rng.below(auctions)
        };
        let auction = (FIRST_AUCTION_ID + index / AUCTION_ROTATION_EVENTS).saturating_add(offset);
        let bidder = FIRST_BIDDER_ID.saturating_add(rng.below(self.config.bidders));
        let price = match rng.below(100) {
            0..50 => rng.range(100, 999),
            50..90 => rng.range(1_000, 10_000),
            90..99 => rng.range(10_001, 100_000),
            _ => rng.range(100_001, 10_000_000),
        };
        let channel = pick(&self.names.channels, rng.below(100));
        let mut url = StackStr::new();
        url.push_str("https://shop.example/item/");
        url.push_u64(auction);
        url.push_str("?ref=");
        url.push_u64(rng.below(1_000));
        let values = vec![
            Value::Int(to_i64(auction)),
            Value::Int(to_i64(bidder)),
            Value::Int(to_i64(price)),
            Value::Str(channel),
            Value::Str(Arc::from(url.as_str())),
        ];
        (Arc::clone(&self.names.bid), values)
    }

    /// Nexmark event `index`: a person, an auction or a bid by its place in its cycle of
    /// [`NEXMARK_CYCLE`] events. Ids count up in stream order, so the persons and auctions that
    /// exist when event `index` is generated are known from `index` alone.
    fn nexmark(&self, index: u64, time: i64, rng: &mut SplitMix64) -> (Arc<str>, Vec<Value>) {
        let cycle = index / NEXMARK_CYCLE;
        let offset = index % NEXMARK_CYCLE;
        // The newest person, counted from 0: the one of this cycle, made at its offset 0.
        let last_person = cycle;
        let mut values = vec![Value::Null; NEXMARK_FIELDS.len()];
        let id = |n: u64| Value::Int(to_i64(n));
        values[10] = Value::Int(time);
        match offset {
            0 => {
                values[0] = id(FIRST_PERSON_ID.saturating_add(cycle));
                let name = rng.below(self.names.full_names.len() as u64) as usize;
                values[1] = Value::Str(Arc::clone(&self.names.full_names[name]));
                let mut email = StackStr::new();
                push_letters(&mut email, rng, 3, 10);
                email.push_str("@");
                push_letters(&mut email, rng, 3, 10);
                email.push_str(".com");
                values[2] = Value::Str(Arc::from(email.as_str()));
                let mut card = StackStr::new();
                for group in 0..4 {
                    if group > 0 {
                        card.push_str(" ");
                    }
                    let digits = rng.below(10_000);
                    for power in [1_000, 100, 10, 1] {
                        card.push_u64(digits / power % 10);
                    }
                }
                values[3] = Value::Str(Arc::from(card.as_str()));
                let city = rng.below(self.names.cities.len() as u64) as usize;
                values[4] = Value::Str(Arc::clone(&self.names.cities[city]));
                let state = rng.below(self.names.states.len() as u64) as usize;
                values[5] = Value::Str(Arc::clone(&self.names.states[state]));
                (Arc::clone(&self.names.person), values)
            }
            1..=3 => {
                let auction = cycle.saturating_mul(3).saturating_add(offset - 1);
                values[0] = id(FIRST_AUCTION_ID.saturating_add(auction));
                let mut item = StackStr::new();
                push_letters(&mut item, rng, 5, 20);
                values[6] = Value::Str(Arc::from(item.as_str()));
                let mut description = StackStr::new();
                push_letters(&mut description, rng, 10, 40);
                values[7] = Value::Str(Arc::from(description.as_str()));
                let initial_bid = nexmark_price(rng);
                values[8] = id(initial_bid);
                values[9] = id(initial_bid.saturating_add(nexmark_price(rng)));
                // An auction lasts up to twice the event time of NEXMARK_IN_FLIGHT_AUCTIONS
                // auctions, so about that many are open at once.
                let in_flight_ms = NEXMARK_IN_FLIGHT_AUCTIONS * NEXMARK_CYCLE * 1000
                    / 3
                    / self.config.events_per_second.max(1);
                let length = rng.range(1, in_flight_ms.saturating_mul(2).max(1));
                values[11] = Value::Int(time.saturating_add(to_i64(length)));
                let seller =
                    hot_or_recent(rng, last_person, HOT_PERSON_RATIO, NEXMARK_ACTIVE_PEOPLE);
                values[12] = id(FIRST_PERSON_ID.saturating_add(seller));
                values[13] = id(FIRST_CATEGORY_ID + rng.below(NEXMARK_CATEGORIES));
                (Arc::clone(&self.names.auction), values)
            }
            _ => {
                // The newest auction, counted from 0: the last of this cycle's three.
                let last_auction = cycle.saturating_mul(3).saturating_add(2);
                let auction = hot_or_recent(
                    rng,
                    last_auction,
                    HOT_AUCTION_RATIO,
                    NEXMARK_IN_FLIGHT_AUCTIONS,
                );
                values[14] = id(FIRST_AUCTION_ID.saturating_add(auction));
                let bidder =
                    hot_or_recent(rng, last_person, HOT_PERSON_RATIO, NEXMARK_ACTIVE_PEOPLE);
                values[15] = id(FIRST_PERSON_ID.saturating_add(bidder));
                values[16] = id(nexmark_price(rng));
                if rng.below(HOT_CHANNEL_RATIO) > 0 {
                    let channel = rng.below(self.names.nexmark_channels.len() as u64) as usize;
                    let (name, url) = &self.names.nexmark_channels[channel];
                    values[17] = Value::Str(Arc::clone(name));
                    values[18] = Value::Str(Arc::clone(url));
                } else {
                    let number = rng.below(10_000);
                    let mut name = StackStr::new();
                    name.push_str("channel-");
                    name.push_u64(number);
                    values[17] = Value::Str(Arc::from(name.as_str()));
                    let mut url = StackStr::new();
                    url.push_str("https://www.nexmark.com/");
                    push_letters(&mut url, rng, 5, 5);
                    url.push_str("/item.htm?query=1&channel_id=");
                    url.push_u64(number);
                    values[18] = Value::Str(Arc::from(url.as_str()));
                }
                (Arc::clone(&self.names.bid), values)
            }
        }
    }

    fn click(&self, rng: &mut SplitMix64) -> (Arc<str>, Vec<Value>) {
        let users = self.config.users;
        // Three clicks in ten come from the busiest fifth of the users.
        let user = if rng.below(10) < 3 {
            rng.below(users.div_ceil(5))
        } else {
            rng.below(users)
        };
        let user = match self
            .names
            .users
            .get(usize::try_from(user).unwrap_or(usize::MAX))
        {
            Some(cached) => Arc::clone(cached),
            None => Arc::from(user_id(user).as_str()),
        };
        let kind = if rng.below(10) == 0 {
            &self.names.page_view
        } else {
            &self.names.user_click
        };
        let page = pick(&self.names.pages, rng.below(100));
        let duration = match rng.below(100) {
            0..50 => rng.range(100, 1_999),
            50..85 => rng.range(2_000, 9_999),
            85..98 => rng.range(10_000, 59_999),
            _ => rng.range(60_000, 600_000),
        };
        let values = vec![
            Value::Str(user),
            Value::Str(page),
            Value::Int(to_i64(duration)),
        ];
        (Arc::clone(kind), values)
    }

    fn charge(&self, rng: &mut SplitMix64) -> (Arc<str>, Vec<Value>) {
        let card = rng.below(self.config.users);
        let card = match self
            .names
            .users
            .get(usize::try_from(card).unwrap_or(usize::MAX))
        {
            Some(cached) => Arc::clone(cached),
            None => Arc::from(card_id(card).as_str()),
        };
        let cents = match rng.below(100) {
            0..5 => rng.range(1, 199),
            5..8 => rng.range(50_000, 250_000),
            _ => rng.range(200, 20_000),
        };
        let merchant = pick(&self.names.pages, rng.below(100));
        let values = vec![
            Value::Str(card),
            Value::Float(cents as f64 / 100.0),
            Value::Str(merchant),
        ];
        (Arc::clone(&self.names.charge), values)
    }

    /// The index of the next event [`Generator::next_batch`] returns.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Moves to event `position`: the next batch starts there. A position at or past the
    /// count leaves nothing to generate.
    pub fn seek(&mut self, position: u64) {
        self.position = position;
    }

    /// The number of events left, or `None` for an unbounded generator.
    pub fn remaining(&self) -> Option<u64> {
        self.config
            .count
            .map(|count| count.saturating_sub(self.position))
    }

    /// Appends up to `max` events to `out` (fewer at the end of the count) and returns how many.
    pub fn next_batch(&mut self, max: usize, out: &mut Vec<Event>) -> usize {
        let end = self.config.count.unwrap_or(u64::MAX);
        let available = end.saturating_sub(self.position);
        let n = usize::try_from(available).map_or(max, |available| available.min(max));
        out.reserve(n);
        let start = self.position;
        out.extend((start..start + n as u64).map(|index| self.event(index)));
        self.position = start + n as u64;
        n
    }

    /// Writes every remaining event as JSON Lines, and returns how many were written.
    ///
    /// Needs a count. `progress` is called with the number written so far every
    /// [`PROGRESS_EVERY`] events, and once at the end. After an error the position is that of
    /// the first event not handed to `out`.
    pub fn write_jsonl(
        &mut self,
        out: &mut impl Write,
        mut progress: impl FnMut(u64),
    ) -> Result<u64> {
        let Some(count) = self.config.count else {
            return Err(ConnectorError::InvalidGenerator(
                "cannot write an unbounded generator: set a count".into(),
            ));
        };
        let io_error = |source| ConnectorError::Io {
            context: "writing generated events".into(),
            cause: source,
        };
        let encoder = Encoder::new(self.layout());
        let mut buffer = Vec::with_capacity(FLUSH_BYTES + 4096);
        let start = self.position;
        let mut next = start;
        while next < count {
            encoder.encode(&self.event(next), &mut buffer);
            next += 1;
            if buffer.len() >= FLUSH_BYTES {
                out.write_all(&buffer).map_err(io_error)?;
                buffer.clear();
                self.position = next;
            }
            if (next - start) % PROGRESS_EVERY == 0 {
                progress(next - start);
            }
        }
        out.write_all(&buffer).map_err(io_error)?;
        out.flush().map_err(io_error)?;
        self.position = next;
        let written = next - start;
        if written % PROGRESS_EVERY != 0 {
            progress(written);
        }
        Ok(written)
    }
}

impl Iterator for Generator {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        if self.position >= self.config.count.unwrap_or(u64::MAX) {
            return None;
        }
        let event = self.event(self.position);
        self.position += 1;
        Some(event)
    }
}

/// `c1`, `c2`, ... for cards 0, 1, ...
fn card_id(card: u64) -> StackStr {
    let mut id = StackStr::new();
    id.push_str("c");
    id.push_u64(card.saturating_add(1));
    id
}

/// `u01`, `u02`, ... for users 0, 1, ...
fn user_id(user: u64) -> StackStr {
    let mut id = StackStr::new();
    id.push_str("u");
    if user < 9 {
        id.push_str("0");
    }
    id.push_u64(user.saturating_add(1));
    id
}

/// Nexmark's choice of an existing entity, counted from 0 with `last` the newest: all but one
/// in `ratio` draws take the hot one (`last` rounded down to a multiple of `ratio`), the others
/// one of the `recent` newest.
fn hot_or_recent(rng: &mut SplitMix64, last: u64, ratio: u64, recent: u64) -> u64 {
    if rng.below(ratio) > 0 {
        last / ratio * ratio
    } else {
        let low = last.saturating_sub(recent - 1);
        low + rng.below(last - low + 1)
    }
}

/// Nexmark's prices, in cents: `10^(6u) * 100` for a uniform `u`, from 1 to a million dollars,
/// most of them small.
fn nexmark_price(rng: &mut SplitMix64) -> u64 {
    let exponent = rng.below(1 << 30) as f64 / f64::from(1u32 << 30) * 6.0;
    (10f64.powf(exponent) * 100.0).round() as u64
}

/// Appends between `min` and `max` random lowercase letters.
fn push_letters(text: &mut StackStr, rng: &mut SplitMix64, min: u64, max: u64) {
    const LETTERS: &str = "abcdefghijklmnopqrstuvwxyz";
    for _ in 0..rng.range(min, max) {
        let letter = rng.below(26) as usize;
        text.push_str(&LETTERS[letter..letter + 1]);
    }
}

/// The entry whose cumulative weight first exceeds `draw`.
fn pick(weighted: &[(Arc<str>, u64)], mut draw: u64) -> Arc<str> {
    for (name, weight) in weighted {
        if draw < *weight {
            return Arc::clone(name);
        }
        draw -= weight;
    }
    weighted
        .last()
        .map(|(name, _)| Arc::clone(name))
        .unwrap_or_else(|| Arc::from(""))
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The splitmix64 finaliser: a bijection on `u64` that scrambles every bit.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// splitmix64 (Steele, Lea and Flood): small, fast and good enough for synthetic data.
#[derive(Clone, Copy, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// A uniform draw from `0..n` (0 when `n` is 0), by multiply-shift.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A uniform draw from `low..=high`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }
}

/// A short ASCII string built on the stack, so that an event's strings cost one allocation
/// each (their `Arc`). Text past the capacity is dropped; no caller comes near it.
struct StackStr {
    bytes: [u8; 96],
    len: usize,
}

impl StackStr {
    fn new() -> StackStr {
        StackStr {
            bytes: [0; 96],
            len: 0,
        }
    }

    fn push_str(&mut self, text: &str) {
        let room = self.bytes.len() - self.len;
        let take = text.len().min(room);
        self.bytes[self.len..self.len + take].copy_from_slice(&text.as_bytes()[..take]);
        self.len += take;
    }

    fn push_u64(&mut self, mut value: u64) {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        let text = std::str::from_utf8(&digits[start..]).unwrap_or("");
        self.push_str(text);
    }

    fn as_str(&self) -> &str {
        // Only ASCII is ever pushed, so this never falls back.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

/// The built-in generator as a source, optionally paced to a rate of events per second.
#[derive(Debug)]
pub struct GeneratorSource {
    generator: Generator,
    rate: Option<u64>,
    started: Option<std::time::Instant>,
    produced: u64,
    ended: bool,
}

impl GeneratorSource {
    /// A source over `generator`, at `rate` events per second of wall-clock time if given.
    pub fn new(generator: Generator, rate: Option<u64>) -> GeneratorSource {
        GeneratorSource {
            generator,
            rate,
            started: None,
            produced: 0,
            ended: false,
        }
    }

    /// Moves to event index `position`.
    pub fn seek_to(&mut self, position: u64) {
        self.generator.seek(position);
        self.ended = false;
    }
}

impl Source for GeneratorSource {
    fn poll_batch(
        &mut self,
        max: usize,
        events: &mut Vec<Event>,
        _dead_letters: &mut Vec<SideRecord>,
    ) -> Result<Poll> {
        if self.ended {
            return Ok(Poll::End);
        }
        let mut max = max;
        if let Some(rate) = self.rate {
            // Pace by wall clock: event n is due at start + n / rate. Waiting here is the point
            // of a rate, so the thread sleeps until the next event is due.
            let started = *self.started.get_or_insert_with(std::time::Instant::now);
            let due = std::time::Duration::from_secs_f64(self.produced as f64 / rate as f64);
            let elapsed = started.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
            max = max.min((rate / 100).max(1) as usize);
        }
        let produced = self.generator.next_batch(max, events);
        self.produced += produced as u64;
        if produced == 0 {
            self.ended = true;
            return Ok(Poll::PartitionEnd { partition: 0 });
        }
        Ok(Poll::Data { partition: 0 })
    }

    fn partitions(&self) -> usize {
        1
    }

    fn positions(&self) -> Vec<PartitionPosition> {
        vec![PartitionPosition {
            name: "generator".into(),
            offset: self.generator.position(),
            line: 0,
        }]
    }

    fn replayable(&self) -> bool {
        true
    }

    fn reads_without_waiting(&self) -> bool {
        true
    }

    fn seek(&mut self, positions: &[PartitionPosition]) -> Result<()> {
        if let Some(position) = positions.first() {
            self.seek_to(position.offset);
        }
        Ok(())
    }
}

/// `type: generator` settings: `profile`, `seed`, `count`, `rate`, `events_per_second`,
/// The settings `configure` takes.
pub(crate) const KEYS: &[&str] = &[
    "profile",
    "seed",
    "count",
    "rate",
    "events_per_second",
    "max_disorder",
    "auctions",
    "bidders",
    "users",
];

/// `max_disorder`, `auctions`, `bidders`, `users`.
pub(crate) fn configure(settings: &mut Settings<'_>) -> Option<SourceKind> {
    let mut config = GeneratorConfig::default();
    match settings.string("profile") {
        None => config.profile = Profile::Bids,
        Some((name, place)) => match name.as_str() {
            "bids" => config.profile = Profile::Bids,
            "clicks" => config.profile = Profile::Clicks,
            "cards" => config.profile = Profile::Cards,
            "nexmark" => config.profile = Profile::Nexmark,
            other => settings.problem(
                place,
                format!(
                    "unknown generator profile `{other}`: expected bids, clicks, cards or nexmark"
                ),
            ),
        },
    }
    if let Some((seed, _)) = settings.u64("seed") {
        config.seed = seed;
    }
    config.count = settings.u64("count").map(|(count, _)| count);
    for (key, target) in [
        ("events_per_second", &mut config.events_per_second),
        ("auctions", &mut config.auctions),
        ("bidders", &mut config.bidders),
        ("users", &mut config.users),
    ] {
        if let Some((value, place)) = settings.u64(key) {
            if value == 0 {
                settings.problem(place, format!("`{key}` must be at least 1"));
            }
            *target = value;
        }
    }
    if let Some(millis) = settings.duration("max_disorder") {
        config.max_disorder_ms = millis;
    }
    let rate = settings.u64("rate").map(|(rate, place)| {
        if rate == 0 {
            settings.problem(place, "`rate` must be at least 1 event per second");
        }
        rate
    });
    Some(SourceKind::Generator { config, rate })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataflow_event::json::{Decoder, DecoderConfig};

    fn generator(profile: Profile, seed: u64, count: Option<u64>) -> Generator {
        Generator::new(GeneratorConfig {
            profile,
            seed,
            count,
            ..GeneratorConfig::default()
        })
        .expect("valid config")
    }

    fn batch(generator: &mut Generator, max: usize) -> Vec<Event> {
        let mut events = Vec::new();
        generator.next_batch(max, &mut events);
        events
    }

    #[test]
    fn same_seed_same_events_and_different_seeds_differ() {
        for profile in [Profile::Bids, Profile::Clicks, Profile::Nexmark] {
            let a = batch(&mut generator(profile, 7, None), 2_000);
            let b = batch(&mut generator(profile, 7, None), 2_000);
            let c = batch(&mut generator(profile, 8, None), 2_000);
            assert_eq!(a.len(), 2_000);
            assert_eq!(a, b);
            let differing = a
                .iter()
                .zip(&c)
                .filter(|(x, y)| x.payload != y.payload)
                .count();
            assert!(
                differing > 1_500,
                "{profile}: only {differing} payloads differ"
            );
            // Pure in the index: event(i) does not depend on what was generated before.
            let fresh = generator(profile, 7, None);
            for index in [1_999, 0, 1_000, 5] {
                assert_eq!(fresh.event(index), a[index as usize]);
            }
        }
    }

    #[test]
    fn seek_then_batch_equals_events_from_there() {
        for profile in [Profile::Bids, Profile::Clicks, Profile::Nexmark] {
            let mut source = generator(profile, 42, None);
            let _ = batch(&mut source, 10);
            source.seek(123_456_789);
            assert_eq!(source.position(), 123_456_789);
            let events = batch(&mut source, 50);
            assert_eq!(source.position(), 123_456_839);
            let expected: Vec<Event> = (123_456_789..123_456_839)
                .map(|i| source.event(i))
                .collect();
            assert_eq!(events, expected);
            source.seek(3);
            assert_eq!(source.next(), Some(source.event(3)));
            assert_eq!(source.position(), 4);
        }
    }

    #[test]
    fn event_metadata() {
        let bids = generator(Profile::Bids, 1, None);
        let event = bids.event(17);
        assert_eq!(event.id.as_deref(), Some("bids-17"));
        assert_eq!(event.kind.as_deref(), Some("bid"));
        assert_eq!(event.processing_time, 0);
        assert_eq!((event.key, event.headers), (None, None));
        let clicks = generator(Profile::Clicks, 1, None);
        assert_eq!(
            clicks.event(u64::MAX).id.as_deref(),
            Some("clicks-18446744073709551615")
        );
    }

    #[test]
    fn disorder_stays_within_bound() {
        let source = Generator::new(GeneratorConfig {
            events_per_second: 3,
            max_disorder_ms: 1_500,
            ..GeneratorConfig::default()
        })
        .expect("valid config");
        let mut out_of_order = 0;
        let mut max_seen = i64::MIN;
        let mut largest_disorder = 0;
        for index in 0..5_000u64 {
            let base = DEFAULT_START_TIME + (index * 1000 / 3) as i64;
            assert_eq!(source.base_time(index), base);
            let time = source.event(index).event_time;
            assert!(
                (base - 1_500..=base).contains(&time),
                "event {index} at {time}, base {base}"
            );
            largest_disorder = largest_disorder.max(base - time);
            if time < max_seen {
                out_of_order += 1;
            }
            max_seen = max_seen.max(time);
        }
        assert!(
            out_of_order > 1_000,
            "only {out_of_order} events out of order"
        );
        assert!(largest_disorder > 1_450);

        let ordered = Generator::new(GeneratorConfig {
            max_disorder_ms: 0,
            ..GeneratorConfig::default()
        })
        .expect("valid config");
        for index in 0..1_000 {
            assert_eq!(
                ordered.event(index).event_time,
                DEFAULT_START_TIME + index as i64
            );
        }
    }

    #[test]
    fn count_is_honoured() {
        let mut source = generator(Profile::Clicks, 3, Some(25));
        let mut events = Vec::new();
        assert_eq!(source.next_batch(10, &mut events), 10);
        assert_eq!(source.remaining(), Some(15));
        assert_eq!(source.next_batch(10, &mut events), 10);
        assert_eq!(source.next_batch(10, &mut events), 5);
        assert_eq!(source.next_batch(10, &mut events), 0);
        assert_eq!(events.len(), 25);
        assert_eq!(source.position(), 25);
        assert_eq!(source.next(), None);
        source.seek(1_000);
        assert_eq!(source.next_batch(10, &mut events), 0);
        source.seek(20);
        assert_eq!(source.by_ref().count(), 5);
        assert_eq!(generator(Profile::Bids, 3, Some(0)).next(), None);
    }

    #[test]
    fn jsonl_decodes_back_to_the_same_events() {
        for profile in [Profile::Bids, Profile::Clicks, Profile::Nexmark] {
            let count = PROGRESS_EVERY + 10;
            let mut source = generator(profile, 11, Some(count));
            source.seek(5);
            let mut out = Vec::new();
            let mut reports = Vec::new();
            let written = source
                .write_jsonl(&mut out, |n| reports.push(n))
                .expect("writing to a Vec succeeds");
            assert_eq!(written, count - 5);
            assert_eq!(source.position(), count);
            assert_eq!(reports, vec![PROGRESS_EVERY, count - 5]);
            let decoder = Decoder::new(DecoderConfig {
                schema: Some(Generator::schema(profile)),
                time_field: Some("timestamp".into()),
                // Nexmark events have no id of their own; `id` is a person's or an auction's.
                id_field: (profile != Profile::Nexmark).then(|| "id".into()),
                ..DecoderConfig::default()
            });
            let text = String::from_utf8(out).expect("utf-8");
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len() as u64, written);
            for (offset, line) in lines.iter().enumerate() {
                let index = offset as u64 + 5;
                let decoded = decoder.decode(line.as_bytes(), index).expect("valid line");
                assert_eq!(decoded, source.event(index), "line {line}");
            }
            if profile == Profile::Clicks {
                assert!(lines[0].starts_with(r#"{"timestamp":""#));
                assert!(lines[0].contains(r#"Z","type":"#));
                assert!(lines[0].contains(r#""id":"clicks-5","user_id":"u"#));
            }
        }
    }

    #[test]
    fn write_jsonl_needs_a_count_and_reports_io_errors() {
        let mut unbounded = generator(Profile::Bids, 0, None);
        let error = unbounded
            .write_jsonl(&mut Vec::new(), |_| {})
            .expect_err("unbounded");
        assert!(matches!(error, ConnectorError::InvalidGenerator(_)));

        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut source = generator(Profile::Bids, 0, Some(10));
        let error = source
            .write_jsonl(&mut Full, |_| {})
            .expect_err("disk full");
        assert_eq!(error.to_string(), "writing generated events: disk full");
        assert_eq!(source.position(), 0);

        let mut done = generator(Profile::Bids, 0, Some(10));
        done.seek(10);
        let mut reports = Vec::new();
        assert_eq!(
            done.write_jsonl(&mut Vec::new(), |n| reports.push(n))
                .expect("nothing to write"),
            0
        );
        assert_eq!(reports, Vec::<u64>::new());
    }

    #[test]
    fn bids_are_plausible() {
        let source = generator(Profile::Bids, 5, None);
        let schema = Generator::schema(Profile::Bids);
        let mut channels = std::collections::BTreeMap::new();
        let mut cheap = 0;
        let mut expensive = 0;
        let mut auctions = std::collections::HashSet::new();
        let n = 20_000u64;
        for index in 0..n {
            let event = source.event(index);
            let row = event.payload.as_row().expect("row payload");
            assert_eq!(row.len(), schema.len());
            let auction = row[0].as_i64().expect("int auction") as u64;
            let low = FIRST_AUCTION_ID + index / AUCTION_ROTATION_EVENTS;
            assert!(
                (low..low + 1_000).contains(&auction),
                "event {index}: auction {auction}"
            );
            if index < AUCTION_ROTATION_EVENTS * 20 {
                auctions.insert(auction);
            }
            let bidder = row[1].as_i64().expect("int bidder") as u64;
            assert!((FIRST_BIDDER_ID..FIRST_BIDDER_ID + 10_000).contains(&bidder));
            let price = row[2].as_i64().expect("int price");
            assert!((100..=10_000_000).contains(&price));
            if price <= 10_000 {
                cheap += 1;
            }
            if price > 100_000 {
                expensive += 1;
            }
            let channel = row[3].as_str().expect("string channel");
            *channels.entry(channel.to_string()).or_insert(0u64) += 1;
            let url = row[4].as_str().expect("string url");
            let prefix = format!("https://shop.example/item/{auction}?ref=");
            assert!(url.starts_with(&prefix), "{url}");
            assert!(url[prefix.len()..].parse::<u64>().is_ok(), "{url}");
        }
        assert_eq!(
            channels.keys().map(String::as_str).collect::<Vec<_>>(),
            ["api", "mobile", "partner", "web"]
        );
        assert!(channels["web"] > channels["mobile"] && channels["api"] > channels["partner"]);
        assert!(channels["partner"] > n / 40, "{channels:?}");
        assert!(cheap > n * 85 / 100, "{cheap} cheap bids");
        assert!(expensive > 0);
        // The first 2,000 bids, over auctions 1000..1020 + 0..1000, reach most of them.
        assert!(auctions.len() > 700, "{} distinct auctions", auctions.len());
        // The window of active auctions moves on.
        let late = source.event(10_000_000).payload.as_row().expect("row")[0].as_i64();
        assert!(late >= Some(101_000));
    }

    #[test]
    fn clicks_are_plausible() {
        let source = generator(Profile::Clicks, 9, None);
        let mut users = std::collections::BTreeSet::new();
        let mut page_views = 0;
        let n = 10_000u64;
        for index in 0..n {
            let event = source.event(index);
            match event.kind.as_deref() {
                Some("page_view") => page_views += 1,
                Some("user_click") => {}
                other => panic!("unexpected kind {other:?}"),
            }
            let row = event.payload.as_row().expect("row payload");
            users.insert(row[0].as_str().expect("string user").to_string());
            let page = row[1].as_str().expect("string page");
            assert!(PAGES.iter().any(|(name, _)| *name == page), "{page}");
            let duration = row[2].as_i64().expect("int duration");
            assert!((100..=600_000).contains(&duration));
        }
        assert!(
            (700..1_300).contains(&page_views),
            "{page_views} page views"
        );
        assert_eq!(users.len(), 50);
        assert_eq!(users.first().map(String::as_str), Some("u01"));
        assert_eq!(users.last().map(String::as_str), Some("u50"));

        // Uncached user ids are built the same way.
        let many = Generator::new(GeneratorConfig {
            profile: Profile::Clicks,
            users: USER_CACHE_LIMIT + 1,
            ..GeneratorConfig::default()
        })
        .expect("valid config");
        assert!(many.names.users.is_empty());
        let user = many.event(0).payload.as_row().expect("row")[0].clone();
        assert!(user
            .as_str()
            .is_some_and(|id| id.starts_with('u') && id[1..].parse::<u64>().is_ok()));
    }

    /// The Nexmark stream: its proportions, its ids counting up, every reference naming a person
    /// or an auction generated before, and the fields each kind sets.
    #[test]
    fn nexmark_keeps_its_mix_and_refers_to_existing_entities() {
        let source = generator(Profile::Nexmark, 3, None);
        let schema = Generator::schema(Profile::Nexmark);
        let field = |name: &str| schema.index_of(name).expect("nexmark field");
        let set_by = |kind: &str| -> Vec<&str> {
            match kind {
                "person" => vec![
                    "id",
                    "name",
                    "email_address",
                    "credit_card",
                    "city",
                    "state",
                    "date_time",
                ],
                "auction" => vec![
                    "id",
                    "item_name",
                    "description",
                    "initial_bid",
                    "reserve",
                    "date_time",
                    "expires",
                    "seller",
                    "category",
                ],
                _ => vec!["auction", "bidder", "price", "channel", "url", "date_time"],
            }
        };
        let mut persons = std::collections::HashSet::new();
        let mut auctions = std::collections::HashSet::new();
        let mut kinds = std::collections::BTreeMap::new();
        let mut bids_per_auction = std::collections::HashMap::new();
        let mut hot_channels = 0;
        let n = 50_000u64;
        for index in 0..n {
            let event = source.event(index);
            assert_eq!(event.id, None);
            let kind = event.kind.as_deref().expect("a kind").to_string();
            let row = event.payload.as_row().expect("row payload");
            assert_eq!(row.len(), schema.len());
            let set = set_by(&kind);
            for (position, value) in row.iter().enumerate() {
                let name = &schema.fields()[position].name;
                assert_eq!(
                    !value.is_null(),
                    set.contains(&name.as_str()),
                    "event {index} ({kind}): field {name} is {value:?}"
                );
            }
            assert_eq!(row[field("date_time")], Value::Int(event.event_time));
            let int = |name: &str| row[field(name)].as_i64().expect("int field") as u64;
            match kind.as_str() {
                "person" => {
                    assert_eq!(index % NEXMARK_CYCLE, 0);
                    assert_eq!(int("id"), FIRST_PERSON_ID + persons.len() as u64);
                    persons.insert(int("id"));
                    let card = row[field("credit_card")].as_str().expect("card");
                    assert_eq!(card.len(), 19, "{card}");
                    assert!(row[field("email_address")]
                        .as_str()
                        .is_some_and(|email| email.contains('@') && email.ends_with(".com")));
                }
                "auction" => {
                    assert!((1..4).contains(&(index % NEXMARK_CYCLE)));
                    assert_eq!(int("id"), FIRST_AUCTION_ID + auctions.len() as u64);
                    auctions.insert(int("id"));
                    assert!(persons.contains(&int("seller")), "event {index}");
                    let category = int("category");
                    assert!((FIRST_CATEGORY_ID..FIRST_CATEGORY_ID + 5).contains(&category));
                    assert!(int("reserve") >= int("initial_bid"));
                    assert!(int("expires") as i64 > event.event_time);
                }
                "bid" => {
                    assert!(index % NEXMARK_CYCLE >= 4);
                    assert!(auctions.contains(&int("auction")), "event {index}");
                    assert!(persons.contains(&int("bidder")), "event {index}");
                    assert!((100..=100_000_000).contains(&int("price")));
                    *bids_per_auction.entry(int("auction")).or_insert(0u64) += 1;
                    let channel = row[field("channel")].as_str().expect("channel");
                    if NEXMARK_CHANNELS.contains(&channel) {
                        hot_channels += 1;
                    } else {
                        assert!(channel.starts_with("channel-"), "{channel}");
                    }
                }
                other => panic!("unexpected kind {other}"),
            }
            *kinds.entry(kind).or_insert(0u64) += 1;
        }
        assert_eq!(
            kinds.into_iter().collect::<Vec<_>>(),
            [
                ("auction".to_string(), n / 50 * 3),
                ("bid".to_string(), n / 50 * 46),
                ("person".to_string(), n / 50),
            ]
        );
        // Half the bids go to hot auctions: the busiest auction has far more than its share.
        let busiest = bids_per_auction.values().max().copied().unwrap_or(0);
        assert!(busiest > 40, "busiest auction has {busiest} bids");
        assert!(hot_channels > n * 46 / 50 * 95 / 100);
    }

    #[test]
    fn invalid_configs_are_refused() {
        let base = GeneratorConfig::default();
        let cases = [
            GeneratorConfig {
                events_per_second: 0,
                ..base.clone()
            },
            GeneratorConfig {
                max_disorder_ms: -1,
                ..base.clone()
            },
            GeneratorConfig {
                auctions: 0,
                ..base.clone()
            },
            GeneratorConfig {
                bidders: 0,
                ..base.clone()
            },
            GeneratorConfig {
                profile: Profile::Clicks,
                users: 0,
                ..base.clone()
            },
        ];
        for config in cases {
            let error = Generator::new(config.clone()).expect_err("invalid");
            assert!(
                matches!(error, ConnectorError::InvalidGenerator(_)),
                "{config:?}"
            );
        }
        // Settings of the other profile are not checked.
        assert!(Generator::new(GeneratorConfig { users: 0, ..base }).is_ok());
    }

    #[test]
    fn extreme_configs_do_not_panic() {
        for profile in [Profile::Bids, Profile::Clicks, Profile::Nexmark] {
            for (start_time, events_per_second, max_disorder_ms) in [
                (i64::MAX, 1, i64::MAX),
                (i64::MIN, u64::MAX, i64::MAX),
                (0, u64::MAX, 0),
            ] {
                let mut source = Generator::new(GeneratorConfig {
                    profile,
                    seed: u64::MAX,
                    count: None,
                    start_time,
                    events_per_second,
                    max_disorder_ms,
                    auctions: u64::MAX,
                    bidders: u64::MAX,
                    users: u64::MAX,
                })
                .expect("valid config");
                for index in [0, 1, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
                    let _ = source.event(index);
                }
                source.seek(u64::MAX - 2);
                let mut events = Vec::new();
                assert_eq!(source.next_batch(10, &mut events), 2);
                assert_eq!(source.next_batch(10, &mut events), 0);
            }
        }
    }

    /// `data/clicks.jsonl` is event `3 * k` (k in 0..300) of this generator, with three
    /// malformed lines and two events ten minutes late inserted by hand.
    #[test]
    fn shipped_click_sample_matches_the_generator() {
        let source = Generator::new(GeneratorConfig {
            profile: Profile::Clicks,
            seed: 2024,
            start_time: DEFAULT_START_TIME + 5_000,
            events_per_second: 1,
            max_disorder_ms: 5_000,
            users: 12,
            ..GeneratorConfig::default()
        })
        .expect("valid config");
        let decoder = Decoder::new(DecoderConfig {
            schema: Some(Generator::schema(Profile::Clicks)),
            ..DecoderConfig::default()
        });
        let sample = include_str!("../../../data/clicks.jsonl");
        let mut errors = Vec::new();
        let mut late = Vec::new();
        let mut generated = 0;
        let mut max_time = 0;
        for (number, line) in sample.lines().enumerate() {
            let event = match decoder.decode(line.as_bytes(), number as u64 + 1) {
                Ok(event) => event,
                Err(error) => {
                    errors.push(error.to_string());
                    continue;
                }
            };
            if max_time - event.event_time > 5_000 {
                late.push(event.id.as_deref().unwrap_or_default().to_string());
            }
            max_time = max_time.max(event.event_time);
            let id = event.id.as_deref().unwrap_or_default();
            if let Some(index) = id
                .strip_prefix("clicks-")
                .and_then(|n| n.parse::<u64>().ok())
            {
                assert_eq!(index, 3 * generated);
                assert_eq!(event, source.event(index));
                generated += 1;
            }
        }
        assert_eq!(generated, 300);
        assert_eq!(late, ["clicks-late-1", "clicks-late-3", "clicks-late-2"]);
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].starts_with("line 62: invalid JSON"),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].starts_with("line 153: field `timestamp`: invalid timestamp"),
            "{}",
            errors[1]
        );
        assert_eq!(
            errors[2],
            "line 245: field `duration_ms`: expected int, found string \"slow\""
        );
    }

    #[test]
    fn profiles_parse_and_print() {
        for profile in [
            Profile::Bids,
            Profile::Clicks,
            Profile::Cards,
            Profile::Nexmark,
        ] {
            assert_eq!(
                profile.to_string().parse::<Profile>().expect("known"),
                profile
            );
        }
        assert!("trades".parse::<Profile>().is_err());
        assert_eq!(
            Generator::schema(Profile::Clicks).index_of("duration_ms"),
            Some(2)
        );
    }
}

//! Event filtering (SPEC §7): EventBridge-style patterns matched the way Lambda event source
//! mapping `FilterCriteria` match them, which is the way AWS's event-ruler matches them.
//!
//! A pattern is compiled once ([`Pattern::parse`]) and then matched against the JSON view of
//! every record ([`Pattern::matches`]); matching allocates nothing and never panics. Up to
//! [`MAX_FILTERS`] patterns form a [`FilterSet`]; they are ORed, and an empty set lets every
//! record through. A set matches records directly ([`FilterSet::matches`]): it builds only the
//! part of a record's view that its patterns name (for the usual pattern on the body, the
//! body's named fields), so the rest of the record is never allocated.
//!
//! The parts: [`pattern`] compiles pattern text into rules, [`view`] builds a record's pruned
//! view, [`matcher`] matches rules against views, [`json`] reads JSON the way event-ruler
//! does (keys in document order, numbers as written).
//!
//! # Semantics
//!
//! The reference is event-ruler (`software.amazon.event.ruler`, the engine behind Lambda's and
//! EventBridge's filtering), checked case by case by tests/filter_differential.rs; Lambda's
//! "Control which events Lambda sends to your function" page adds the limits and the data
//! format check. docs/lambda-migration.md lists the operators and every deliberate difference.
//!
//! - A pattern is a non-empty JSON object. A key whose value is an object descends; a key whose
//!   value is a non-empty array is a leaf: the record's value at that path must match one
//!   element of the array (a literal or an operator object). A path is the keys from the top
//!   joined with `.`, in the pattern and in the record alike, so `{"a.b": [1]}`,
//!   `{"a": {"b": [1]}}` and records `{"a": {"b": 1}}` and `{"a.b": 1}` all meet at `a.b`.
//! - All paths must match (AND). A path named twice keeps its last mention in document order,
//!   `$or` branches included: `{"a": [1], "$or": [{"a": [2]}, {"b": [3]}]}` is `a = 2` or
//!   `a = 1 and b = 3`. `$or` (an array of two or more objects, at any level) makes one rule
//!   per branch; the pattern matches when any of them does.
//! - Literals are typed: `"5"` never matches the number `5`, nor `"true"` the boolean. `null`
//!   matches only JSON null (not a missing key), `""` only the empty string. A string literal
//!   that is an IP address matches the same address however written (`"10.0.0.1"` matches
//!   `"10.000.0.1"`). A number literal matches the same text, or the same value when a double
//!   holds both exactly (`5` matches `5.0`; `0.10000000000000001` matches only itself).
//! - Record arrays are flattened: a path matches when any element matches. The values that
//!   satisfy a rule's paths must be consistent: two inside the same record array must come
//!   from the same element of it.
//! - Operators: `prefix`, `suffix` (both also `{"equals-ignore-case": ".."}`),
//!   `equals-ignore-case`, `exactly` (a string, matched exactly), `wildcard` (`*` = any run of
//!   characters, `\*` and `\\` escape), `numeric` (`["=", n]`, one of `> >= < <=`, or a
//!   lower bound `>`/`>=` then a larger upper bound `<`/`<=`), `exists` (true/false),
//!   `anything-but` (a string, a number, a list of strings or of numbers, or
//!   `{"prefix"|"suffix"|"equals-ignore-case"|"wildcard": string or list}`) and `cidr` (an IPv4
//!   or IPv6 block `address/bits`; it matches string values that are addresses from the given
//!   address to the block's last one). String operators only match strings, `numeric` only
//!   JSON numbers (not numeric strings) that a double holds exactly.
//! - Ignore-case matching maps only the pattern: each of its characters stands for its lower
//!   or upper case form, so `straße` matches `STRASSE` but not the other way round.
//! - `anything-but` matches any present leaf value (string, number, boolean or null) that is
//!   not excluded; it never matches a missing key.
//! - `exists` looks at leaves only: `{"exists": true}` matches a path holding a scalar (null
//!   included), also inside arrays, and not an object or an empty array. `{"exists": false}`
//!   matches when the record has no scalar at the path anywhere (whatever the array element).
//! - Data fields (`body` for SQS, `data` for Kinesis, `dynamodb` for DynamoDB, top-level keys):
//!   Lambda first checks that the format of the record's data and of the pattern for it agree
//!   ("Properly filtering Amazon SQS messages" / "Kinesis and DynamoDB" tables). A data value
//!   held as a JSON string is a plain (non-JSON) body; anything else is JSON. A JSON pattern
//!   (`{"body": {...}}`) against a plain body, or a plain-string pattern (`{"body": [...]}`)
//!   against a JSON body, does not match, whatever the operators (even `exists: false`).
//!   For Kinesis and DynamoDB, Lambda refuses a plain-string pattern on the data key when the
//!   mapping is created: [`Pattern::parse_for`] does the same. [`Pattern::parse`] does not know
//!   the source: it treats all three keys as data fields and accepts either pattern format on
//!   each. A body that is itself a JSON string literal (`"hi"`, quotes included) arrives in the
//!   record view as a string, so it counts as plain.
//! - Limits: at most [`MAX_FILTERS`] patterns (Lambda's default quota), each at most
//!   [`MAX_PATTERN_CHARS`] characters (the `Filter.Pattern` API constraint), expanding to at
//!   most 1024 combinations of `$or` branches of at most 64 fields each. Empty objects, empty
//!   arrays and `$or` with fewer than two branches are refused, as event-ruler does. Matching a
//!   hostile record is bounded: one that offers a rule's fields thousands of ways does not
//!   match.

mod json;
mod matcher;
mod pattern;
#[cfg(test)]
mod tests;
mod view;

use std::str::FromStr;

use serde_json::Value;

use crate::api::SourceKind;
use crate::event::EventRecord;
use json::Json;
use pattern::Rule;
use view::KeyTree;

/// Patterns per [`FilterSet`] (Lambda's default quota; it can be raised to 10 on request).
pub const MAX_FILTERS: usize = 5;

/// Length limit of one pattern, in characters (Lambda API `Filter.Pattern`, max 4096).
pub const MAX_PATTERN_CHARS: usize = 4096;

/// Why a pattern (or a list of patterns) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The pattern text is not JSON.
    #[error("not valid JSON: {0}")]
    Json(String),
    /// The pattern text is longer than [`MAX_PATTERN_CHARS`].
    #[error("pattern is {len} characters long, at most {max} are allowed")]
    TooLong {
        /// Characters in the pattern.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The pattern is JSON but not a valid filter pattern.
    #[error("{}{message}", crate::error::field_prefix(.path))]
    Invalid {
        /// Dotted path of the offending key (`body.price`, `$or[1].size`); empty when the
        /// problem is the pattern as a whole.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// More patterns than [`MAX_FILTERS`].
    #[error("{}: {}", self.field().unwrap_or_default(), self.reason())]
    TooManyFilters {
        /// Patterns given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A pattern of a [`FilterSet`] is invalid.
    #[error("{}: {}", self.field().unwrap_or_default(), self.reason())]
    Filter {
        /// Index of the pattern in the list.
        index: usize,
        /// What is wrong with it.
        error: Box<FilterError>,
    },
}

impl FilterError {
    /// The mapping field an error of a [`FilterSet`] is about, relative to `spec`
    /// (`filterCriteria.filters[2].pattern`); `None` for an error of a lone pattern.
    pub fn field(&self) -> Option<String> {
        match self {
            FilterError::TooManyFilters { .. } => Some("filterCriteria.filters".into()),
            FilterError::Filter { index, .. } => {
                Some(format!("filterCriteria.filters[{index}].pattern"))
            }
            _ => None,
        }
    }

    /// What is wrong, without [`FilterError::field`].
    pub fn reason(&self) -> String {
        match self {
            FilterError::TooManyFilters { count, max } => {
                format!("at most {max} patterns are allowed, got {count}")
            }
            FilterError::Filter { error, .. } => error.to_string(),
            other => other.to_string(),
        }
    }
}

fn invalid(path: &str, message: impl Into<String>) -> FilterError {
    FilterError::Invalid {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Which top-level keys are data fields, and whether a plain-string pattern on them is allowed.
#[derive(Clone, Copy)]
enum DataKeys {
    /// Source unknown: `body`, `data` and `dynamodb`, plain patterns allowed.
    Any,
    Source(SourceKind),
}

impl DataKeys {
    fn is_data_key(self, key: &str) -> bool {
        match self {
            DataKeys::Any => matches!(key, "body" | "data" | "dynamodb"),
            DataKeys::Source(kind) => key == kind.data_key(),
        }
    }
}

/// One compiled filter pattern (`filterCriteria.filters[].pattern`).
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    /// One per combination of `$or` branches; any may match.
    rules: Vec<Rule>,
}

impl Pattern {
    /// Parse a pattern string for a record of any source: `body`, `data` and `dynamodb` at the
    /// top level are all treated as data fields (see the module docs). Errors say what is wrong
    /// and where, e.g. `body.price: numeric needs pairs of operator and number`.
    pub fn parse(pattern: &str) -> Result<Pattern, FilterError> {
        Self::parse_with(pattern, DataKeys::Any)
    }

    /// Parse a pattern string for records of `source`: only its data key is a data field, and
    /// for Kinesis and DynamoDB a plain-string pattern on the data key is refused, as Lambda
    /// refuses it when the mapping is created.
    pub fn parse_for(source: SourceKind, pattern: &str) -> Result<Pattern, FilterError> {
        Self::parse_with(pattern, DataKeys::Source(source))
    }

    fn parse_with(pattern: &str, keys: DataKeys) -> Result<Pattern, FilterError> {
        let len = pattern.chars().count();
        if len > MAX_PATTERN_CHARS {
            return Err(FilterError::TooLong {
                len,
                max: MAX_PATTERN_CHARS,
            });
        }
        let json = Json::parse(pattern).map_err(|e| FilterError::Json(e.to_string()))?;
        Ok(Pattern {
            rules: pattern::compile(&json, keys)?,
        })
    }

    /// Does the record match? `record` is the JSON view of the record as Lambda filters it:
    /// for SQS `{messageId, attributes, messageAttributes, body, ...}` where `body` is the parsed
    /// JSON body when the body is valid JSON, else a JSON string; for Kinesis
    /// `{partitionKey, ..., data}` with `data` the parsed JSON of the decoded data (or a
    /// string); for DynamoDB `{eventName, ..., dynamodb: {...}}`. A record that is not a JSON
    /// object matches nothing. A `Value` has lost how its numbers were written and which keys
    /// came twice: [`Pattern::matches_json`] keeps both.
    pub fn matches(&self, record: &Value) -> bool {
        self.matches_view(&Json::from_value(record))
    }

    /// [`Pattern::matches`] on a record view given as JSON text; text that is not JSON matches
    /// nothing.
    pub fn matches_json(&self, record: &str) -> bool {
        Json::parse(record).is_ok_and(|record| self.matches_view(&record))
    }

    fn matches_view(&self, view: &Json) -> bool {
        self.rules.iter().any(|rule| rule.matches(view))
    }
}

impl FromStr for Pattern {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pattern::parse(s)
    }
}

/// Up to [`MAX_FILTERS`] patterns, ORed. Empty = everything matches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilterSet {
    patterns: Vec<Pattern>,
    /// What the patterns look at: the part of a record's view that matching builds.
    keys: KeyTree,
}

impl FilterSet {
    /// Parse `filterCriteria.filters[].pattern` for records of any source (see
    /// [`Pattern::parse`]). An error names the pattern's index:
    /// `filterCriteria.filters[2].pattern: ...`; more than [`MAX_FILTERS`] patterns is an error.
    pub fn parse<'a>(
        patterns: impl IntoIterator<Item = &'a str>,
    ) -> Result<FilterSet, FilterError> {
        Self::parse_with(patterns, DataKeys::Any)
    }

    /// Like [`FilterSet::parse`], with the checks of [`Pattern::parse_for`].
    pub fn parse_for<'a>(
        source: SourceKind,
        patterns: impl IntoIterator<Item = &'a str>,
    ) -> Result<FilterSet, FilterError> {
        Self::parse_with(patterns, DataKeys::Source(source))
    }

    fn parse_with<'a>(
        patterns: impl IntoIterator<Item = &'a str>,
        keys: DataKeys,
    ) -> Result<FilterSet, FilterError> {
        let texts: Vec<&str> = patterns.into_iter().collect();
        if texts.len() > MAX_FILTERS {
            return Err(FilterError::TooManyFilters {
                count: texts.len(),
                max: MAX_FILTERS,
            });
        }
        let patterns = texts
            .iter()
            .enumerate()
            .map(|(index, text)| {
                Pattern::parse_with(text, keys).map_err(|error| FilterError::Filter {
                    index,
                    error: Box::new(error),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut keys = KeyTree::default();
        for rule in patterns.iter().flat_map(|p| &p.rules) {
            keys.add(rule);
        }
        Ok(FilterSet { patterns, keys })
    }

    /// Does any pattern match the record (or is the set empty)?
    pub fn matches<R: EventRecord>(&self, record: &R) -> bool {
        if self.patterns.is_empty() {
            return true;
        }
        let view = self.keys.view_of(record);
        self.patterns.iter().any(|p| p.matches_view(&view))
    }

    /// No patterns: every record matches.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Number of patterns.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }
}

/// A record's whole filter view, as [`FilterSet::matches`] would see it with every key named.
#[cfg(test)]
pub(crate) fn full_view<R: EventRecord>(record: &R) -> Value {
    view::WHOLE.view_of(record).to_value()
}

#[cfg(test)]
impl FilterSet {
    /// The view this set builds of `record`.
    pub(crate) fn view<R: EventRecord>(&self, record: &R) -> Value {
        self.keys.view_of(record).to_value()
    }

    /// Does any pattern match this view of a record (or is the set empty)?
    pub(crate) fn matches_value(&self, view: &Value) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(view))
    }
}

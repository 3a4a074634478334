//! Event filtering (SPEC §7): EventBridge-style patterns matched the way Lambda event source
//! mapping `FilterCriteria` match them.
//!
//! A pattern is compiled once ([`Pattern::parse`]) and then matched against the JSON view of
//! every record ([`Pattern::matches`]); matching allocates nothing and never panics. Up to
//! [`MAX_FILTERS`] patterns form a [`FilterSet`]; they are ORed, and an empty set lets every
//! record through. A set matches records directly ([`FilterSet::matches`]): it builds only the
//! part of a record's view that its patterns name (for the usual pattern on the body, the
//! body's named fields), so the rest of the record is never allocated.
//!
//! # Semantics
//!
//! References: Lambda "Control which events Lambda sends to your function"
//! (<https://docs.aws.amazon.com/lambda/latest/dg/invocation-eventfiltering.html>), its
//! per-source pages (`with-sqs-filtering`, `with-kinesis-filtering`, `with-ddb-filtering`),
//! EventBridge "Event patterns" / "Content filtering"
//! (<https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-patterns.html>), and
//! aws/event-ruler (the engine behind both) where the documents are silent.
//!
//! - A pattern is a non-empty JSON object. A key whose value is an object descends into the
//!   record; a key whose value is a non-empty array is a leaf: the record's value there must
//!   match at least one element of the array (a literal or an operator object). All keys must
//!   match (AND). A key missing from the record fails, except under `{"exists": false}`.
//! - Literals are typed: `"5"` never matches the number `5`, nor `"true"` the boolean. `null`
//!   matches only JSON null (not a missing key), `""` only the empty string. Numbers compare
//!   by value, so `5` matches `5.0`: the Lambda page says numbers compare as text ("300,
//!   300.0, and 3.0e2 are not considered equal"), but event-ruler's `JsonRuleCompiler` compiles
//!   every number literal to both a text match and a numeric-equality match; we follow the
//!   engine. (The record view has parsed numbers, so their text is gone anyway.)
//! - A record array matches when any element matches (arrays are flattened, as event-ruler
//!   does). Where a pattern object meets an array of objects, all of the object's keys must
//!   match within one element.
//! - Operators: `prefix`, `suffix` (both also `{"equals-ignore-case": ".."}`),
//!   `equals-ignore-case`, `equals`, `wildcard` (`*` = any run of characters, `\*` and `\\`
//!   escape), `numeric` (`["=", n]`, one of `> >= < <=`, or a range: a lower bound `>`/`>=`
//!   then an upper bound `<`/`<=`), `exists` (true/false), `anything-but` (a string, a number,
//!   a list of strings or of numbers, or `{"prefix"|"suffix"|"equals-ignore-case"|"wildcard":
//!   string or list}`), and `$or` (an array of two or more objects, any of which may match,
//!   at any level). `cidr` is refused at parse time. String operators only match strings,
//!   `numeric` only JSON numbers (not numeric strings).
//! - `anything-but` matches any present leaf value (string, number, boolean or null) that is
//!   not excluded; it never matches a missing key.
//! - `exists` looks at leaves only, as the Lambda page notes: `{"exists": true}` matches a key
//!   holding a scalar (null included) or an array with a scalar in it, and does not match a
//!   key holding an object or an empty array; `{"exists": false}` is the opposite, and also
//!   matches when any parent of the key is missing.
//! - Data fields (`body` for SQS, `data` for Kinesis, `dynamodb` for DynamoDB, top-level keys):
//!   Lambda first checks that the format of the record's data and of the pattern for it agree
//!   ("Properly filtering Amazon SQS messages" / "Kinesis and DynamoDB" tables). A data value
//!   held as a JSON string is a plain (non-JSON) body; anything else is JSON. A JSON pattern
//!   (`{"body": {...}}`) against a plain body, or a plain-string pattern (`{"body": [...]}`)
//!   against a JSON body, does not match, whatever the operators (even `exists: false`).
//!   Matching plain to plain and JSON to JSON then follows the rules above; a pattern without
//!   the data key skips the check. For Kinesis and DynamoDB, Lambda refuses a plain-string
//!   pattern on the data key when the mapping is created: [`Pattern::parse_for`] does the
//!   same. [`Pattern::parse`] does not know the source: it treats all three keys as data
//!   fields and accepts either pattern format on each. A body that is itself a JSON string
//!   literal (`"hi"`, quotes included) arrives in the record view as a string, so it counts
//!   as plain.
//! - Limits: at most [`MAX_FILTERS`] patterns (Lambda's default quota), each at most
//!   [`MAX_PATTERN_CHARS`] characters (the `Filter.Pattern` API constraint). Empty objects,
//!   empty arrays and `$or` with fewer than two branches are refused, as event-ruler does.
//!   Numeric values are compared as `f64`, with no range limit.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::api::SourceKind;
use crate::event::EventRecord;

/// Patterns per [`FilterSet`] (Lambda's default quota; it can be raised to 10 on request).
pub const MAX_FILTERS: usize = 5;

/// Length limit of one pattern, in characters (Lambda API `Filter.Pattern`, max 4096).
pub const MAX_PATTERN_CHARS: usize = 4096;

/// Nesting of record arrays that matching looks into; deeper elements are ignored, so a
/// hostile record cannot exhaust the stack.
const MAX_ARRAY_DEPTH: usize = 32;

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
    root: ObjectPattern,
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
        let value: Value =
            serde_json::from_str(pattern).map_err(|e| FilterError::Json(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(invalid(
                "",
                format!(
                    "a pattern must be a JSON object such as {{\"body\": {{\"field\": [\"value\"]}}}}, got {}",
                    kind_of(&value)
                ),
            ));
        };
        let root = ObjectPattern::parse(&map, "", Some(keys))?;
        Ok(Pattern { root })
    }

    /// Does the record match? `record` is the JSON view of the record as Lambda filters it:
    /// for SQS `{messageId, attributes, messageAttributes, body, ...}` where `body` is the parsed
    /// JSON body when the body is valid JSON, else a JSON string; for Kinesis
    /// `{partitionKey, ..., data}` with `data` the parsed JSON of the decoded data (or a
    /// string); for DynamoDB `{eventName, ..., dynamodb: {...}}`. A record that is not a JSON
    /// object matches nothing.
    pub fn matches(&self, record: &Value) -> bool {
        match record {
            Value::Object(map) => self.root.matches_map(map),
            _ => false,
        }
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
        for pattern in &patterns {
            keys.add(&pattern.root);
        }
        Ok(FilterSet { patterns, keys })
    }

    /// Does any pattern match the record (or is the set empty)?
    pub fn matches<R: EventRecord>(&self, record: &R) -> bool {
        self.patterns.is_empty() || self.matches_view(&self.keys.view_of(record))
    }

    /// Does any pattern match this view of a record (or is the set empty)?
    fn matches_view(&self, view: &Value) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(view))
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

// ---------------------------------------------------------------------------------------------
// Record views

/// The parts of a record that the patterns of a set look at: the keys they name, level by level,
/// `$or` branches included. Matching needs nothing else, so a record's view holds only these.
#[derive(Debug, Clone, Default, PartialEq)]
struct KeyTree {
    /// A leaf pattern names this key (or the tree stands for whole records): the whole value.
    whole: bool,
    children: BTreeMap<String, KeyTree>,
}

/// The tree of a value taken whole.
static WHOLE: KeyTree = KeyTree {
    whole: true,
    children: BTreeMap::new(),
};

impl KeyTree {
    fn add(&mut self, object: &ObjectPattern) {
        for field in &object.fields {
            let child = self.children.entry(field.key.clone()).or_default();
            match &field.node {
                Node::Leaf(_) => child.whole = true,
                Node::Object(inner) => child.add(inner),
            }
        }
        for branch in object.ors.iter().flatten() {
            self.add(branch);
        }
    }

    fn child(&self, key: &str) -> Option<&KeyTree> {
        if self.whole {
            Some(&WHOLE)
        } else {
            self.children.get(key)
        }
    }

    /// The record as filters see it (see [`Pattern::matches`]), limited to this tree: its JSON
    /// parsed with every unnamed value skipped, and its data field parsed apart.
    fn view_of<R: EventRecord>(&self, record: &R) -> Value {
        let data = record.filter_data();
        let data_key = data.as_ref().map(|d| d.key);
        let mut view = Map::new();
        if self.whole || self.children.keys().any(|k| Some(k.as_str()) != data_key) {
            let json = serde_json::to_vec(record).expect("event records always serialize");
            let fields = Pruned {
                tree: self,
                top: Some(RecordTop {
                    flatten: record.filter_flatten(),
                    skip: data_key,
                }),
            };
            // The record's own JSON always parses; an empty view would match nothing.
            if let Ok(Value::Object(fields)) = parse_pruned(fields, &json) {
                view = fields;
            }
        }
        if let Some(data) = data
            && let Some(tree) = self.child(data.key)
        {
            // JSON is UTF-8 throughout; the pruned parse does not look inside the strings it
            // skips, so check the whole text first. (Skipped numbers beyond f64 and nesting
            // beyond serde_json's 128 levels are valid JSON and are taken as such.)
            let json = std::str::from_utf8(data.bytes)
                .ok()
                .and_then(|_| parse_pruned(Pruned { tree, top: None }, data.bytes).ok());
            let value = json.unwrap_or_else(|| data.plain());
            view.insert(data.key.to_owned(), value);
        }
        Value::Object(view)
    }
}

/// A record's whole filter view, as [`FilterSet::matches`] would see it with every key named.
#[cfg(test)]
pub(crate) fn full_view<R: EventRecord>(record: &R) -> Value {
    WHOLE.view_of(record)
}

#[cfg(test)]
impl FilterSet {
    /// The view this set builds of `record`.
    pub(crate) fn view<R: EventRecord>(&self, record: &R) -> Value {
        self.keys.view_of(record)
    }
}

fn parse_pruned(seed: Pruned<'_>, json: &[u8]) -> serde_json::Result<Value> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let value = seed.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// Deserializes the parts of a JSON value that `tree` names; everything else is skipped
/// without allocating.
#[derive(Clone, Copy)]
struct Pruned<'a> {
    tree: &'a KeyTree,
    /// Set at the top of a record's JSON.
    top: Option<RecordTop<'a>>,
}

#[derive(Clone, Copy)]
struct RecordTop<'a> {
    /// A key whose object's fields are top-level fields (see [`EventRecord::filter_flatten`]).
    flatten: Option<&'a str>,
    /// The data field, parsed apart: left out here, also inside the flattened object.
    skip: Option<&'a str>,
}

/// What a key of an object is to a [`Pruned`] parse.
enum KeyRole<'a> {
    Keep(String, &'a KeyTree),
    Flatten,
    Skip,
}

impl Pruned<'_> {
    fn fill<'de, A: MapAccess<'de>>(
        self,
        map: &mut A,
        out: &mut Map<String, Value>,
    ) -> Result<(), A::Error> {
        while let Some(role) = map.next_key_seed(&self)? {
            match role {
                KeyRole::Keep(key, tree) => {
                    let value = map.next_value_seed(Pruned { tree, top: None })?;
                    out.insert(key, value);
                }
                KeyRole::Flatten => map.next_value_seed(FlattenInto {
                    pruned: Pruned {
                        tree: self.tree,
                        top: self.top.map(|top| RecordTop {
                            flatten: None,
                            ..top
                        }),
                    },
                    out,
                })?,
                KeyRole::Skip => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

impl<'de, 'a> DeserializeSeed<'de> for Pruned<'a> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        if self.tree.whole && self.top.is_none() {
            Value::deserialize(deserializer)
        } else {
            deserializer.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Pruned<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Pruned {
            tree: self.tree,
            top: None,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        self.fill(&mut map, &mut out)?;
        Ok(Value::Object(out))
    }
}

/// Reads a key and says what to do with its value; the key is copied only when kept.
impl<'de, 'a> DeserializeSeed<'de> for &Pruned<'a> {
    type Value = KeyRole<'a>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(KeyVisitor(*self))
    }
}

struct KeyVisitor<'a>(Pruned<'a>);

impl<'de, 'a> Visitor<'de> for KeyVisitor<'a> {
    type Value = KeyRole<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<KeyRole<'a>, E> {
        let Pruned { tree, top } = self.0;
        if let Some(top) = top {
            if top.flatten == Some(key) {
                return Ok(KeyRole::Flatten);
            }
            if top.skip == Some(key) {
                return Ok(KeyRole::Skip);
            }
        }
        Ok(match tree.child(key) {
            Some(child) => KeyRole::Keep(key.to_owned(), child),
            None => KeyRole::Skip,
        })
    }
}

/// Parses an object's kept fields into an enclosing object.
struct FlattenInto<'a, 'm> {
    pruned: Pruned<'a>,
    out: &'m mut Map<String, Value>,
}

impl<'de> DeserializeSeed<'de> for FlattenInto<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FlattenInto<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.pruned.fill(&mut map, self.out)
    }
}

// ---------------------------------------------------------------------------------------------
// Compiled form

/// An object level of a pattern: every field must match, and every `$or` group must have a
/// matching branch.
#[derive(Debug, Clone, PartialEq)]
struct ObjectPattern {
    fields: Vec<Field>,
    ors: Vec<Vec<ObjectPattern>>,
}

#[derive(Debug, Clone, PartialEq)]
struct Field {
    key: String,
    /// Top-level data key (`body` / `data` / `dynamodb`): Lambda's format check applies.
    data_field: bool,
    node: Node,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// `"key": [ ... ]`: any of the matchers.
    Leaf(Vec<Matcher>),
    /// `"key": { ... }`: descend.
    Object(ObjectPattern),
}

#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    Exact(Literal),
    Prefix(String),
    /// Lower-cased prefix.
    PrefixIgnoreCase(String),
    Suffix(String),
    /// Lower-cased suffix.
    SuffixIgnoreCase(String),
    /// Lower-cased value.
    EqualsIgnoreCase(String),
    Wildcard(Wildcard),
    Numeric(NumericRange),
    Exists(bool),
    AnythingBut(AnythingBut),
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Str(String),
    Num(Number),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone, PartialEq)]
enum AnythingBut {
    Strings(Vec<String>),
    Numbers(Vec<Number>),
    Prefixes(Vec<String>),
    Suffixes(Vec<String>),
    /// Lower-cased values.
    IgnoreCase(Vec<String>),
    Wildcards(Vec<Wildcard>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Bound {
    value: f64,
    inclusive: bool,
}

/// `numeric`: `=` is a range whose bounds are equal and inclusive.
#[derive(Debug, Clone, Copy, PartialEq)]
struct NumericRange {
    lower: Option<Bound>,
    upper: Option<Bound>,
}

/// `wildcard`: literal segments separated by `*` (there is one more segment than stars).
#[derive(Debug, Clone, PartialEq)]
struct Wildcard {
    segments: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Parsing

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

const OPERATORS: &str =
    "prefix, suffix, equals-ignore-case, equals, wildcard, numeric, exists, anything-but";

impl ObjectPattern {
    /// `top` is `Some` at the top level of the pattern (including top-level `$or` branches),
    /// where data keys live.
    fn parse(
        map: &Map<String, Value>,
        path: &str,
        top: Option<DataKeys>,
    ) -> Result<ObjectPattern, FilterError> {
        if map.is_empty() {
            let what = if path.is_empty() {
                "an empty pattern is not allowed (leave filterCriteria out to match everything)"
            } else {
                "empty objects are not allowed"
            };
            return Err(invalid(path, what));
        }
        let mut fields = Vec::new();
        let mut ors = Vec::new();
        for (key, value) in map {
            let here = child_path(path, key);
            if key == "$or" {
                ors.push(parse_or(value, &here, top)?);
                continue;
            }
            let data_keys = top.filter(|k| k.is_data_key(key));
            let node = match value {
                Value::Object(inner) => Node::Object(ObjectPattern::parse(inner, &here, None)?),
                Value::Array(items) => {
                    if let Some(DataKeys::Source(
                        kind @ (SourceKind::Kinesis | SourceKind::DynamoDBStreams),
                    )) = data_keys
                    {
                        return Err(invalid(
                            &here,
                            format!(
                                "{kind} data is filtered as JSON: the pattern for {key} must be an object of fields, e.g. {{\"{key}\": {{\"field\": [\"value\"]}}}}"
                            ),
                        ));
                    }
                    Node::Leaf(parse_leaf(items, &here)?)
                }
                other => {
                    return Err(invalid(
                        &here,
                        format!(
                            "must be an object (to match nested fields) or an array of values and operators, got {}",
                            kind_of(other)
                        ),
                    ));
                }
            };
            fields.push(Field {
                key: key.clone(),
                data_field: data_keys.is_some(),
                node,
            });
        }
        Ok(ObjectPattern { fields, ors })
    }
}

fn parse_or(
    value: &Value,
    path: &str,
    top: Option<DataKeys>,
) -> Result<Vec<ObjectPattern>, FilterError> {
    const WANT: &str = "$or must be an array of at least two objects";
    let Value::Array(items) = value else {
        return Err(invalid(path, WANT));
    };
    if items.len() < 2 {
        return Err(invalid(path, WANT));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let here = format!("{path}[{i}]");
            match item {
                Value::Object(map) => ObjectPattern::parse(map, &here, top),
                other => Err(invalid(
                    &here,
                    format!("{WANT}, got {} in it", kind_of(other)),
                )),
            }
        })
        .collect()
}

fn parse_leaf(items: &[Value], path: &str) -> Result<Vec<Matcher>, FilterError> {
    if items.is_empty() {
        return Err(invalid(
            path,
            "empty arrays are not allowed (list at least one value or operator)",
        ));
    }
    items
        .iter()
        .map(|item| match item {
            Value::String(s) => Ok(Matcher::Exact(Literal::Str(s.clone()))),
            Value::Number(n) => Ok(Matcher::Exact(Literal::Num(n.clone()))),
            Value::Bool(b) => Ok(Matcher::Exact(Literal::Bool(*b))),
            Value::Null => Ok(Matcher::Exact(Literal::Null)),
            Value::Object(op) => parse_operator(op, path),
            Value::Array(_) => Err(invalid(
                path,
                "values must be strings, numbers, true, false, null or operator objects, not arrays",
            )),
        })
        .collect()
}

fn parse_operator(op: &Map<String, Value>, path: &str) -> Result<Matcher, FilterError> {
    let mut entries = op.iter();
    let (name, arg) = match (entries.next(), entries.next()) {
        (Some(entry), None) => entry,
        _ => {
            return Err(invalid(
                path,
                format!(
                    "an operator object holds exactly one operator ({OPERATORS}), got {} keys",
                    op.len()
                ),
            ));
        }
    };
    let string_arg = |what: &str| -> Result<String, FilterError> {
        match arg {
            Value::String(s) => Ok(s.clone()),
            other => Err(invalid(
                path,
                format!("{what} must be a string, got {}", kind_of(other)),
            )),
        }
    };
    match name.as_str() {
        "prefix" | "suffix" => {
            let is_prefix = name == "prefix";
            if let Value::Object(inner) = arg {
                let s = ignore_case_arg(inner, path, name)?;
                return Ok(if is_prefix {
                    Matcher::PrefixIgnoreCase(s)
                } else {
                    Matcher::SuffixIgnoreCase(s)
                });
            }
            let s = string_arg(&format!("{name} (or {{\"equals-ignore-case\": \"...\"}})"))?;
            Ok(if is_prefix {
                Matcher::Prefix(s)
            } else {
                Matcher::Suffix(s)
            })
        }
        "equals-ignore-case" => Ok(Matcher::EqualsIgnoreCase(lower(&string_arg(name)?))),
        "equals" => Ok(Matcher::Exact(Literal::Str(string_arg(name)?))),
        "wildcard" => Ok(Matcher::Wildcard(Wildcard::parse(
            &string_arg(name)?,
            path,
        )?)),
        "exists" => match arg {
            Value::Bool(b) => Ok(Matcher::Exists(*b)),
            other => Err(invalid(
                path,
                format!("exists must be true or false, got {}", kind_of(other)),
            )),
        },
        "numeric" => Ok(Matcher::Numeric(NumericRange::parse(arg, path)?)),
        "anything-but" => Ok(Matcher::AnythingBut(AnythingBut::parse(arg, path)?)),
        "cidr" => Err(invalid(path, "the cidr operator is not supported")),
        other => Err(invalid(
            path,
            format!("unknown operator \"{other}\" (supported: {OPERATORS})"),
        )),
    }
}

/// `{"equals-ignore-case": "..."}` inside `prefix` / `suffix`; returns the lower-cased string.
fn ignore_case_arg(
    inner: &Map<String, Value>,
    path: &str,
    outer: &str,
) -> Result<String, FilterError> {
    match (inner.len(), inner.get("equals-ignore-case")) {
        (1, Some(Value::String(s))) => Ok(lower(s)),
        _ => Err(invalid(
            path,
            format!("{outer} takes a string or {{\"equals-ignore-case\": \"...\"}}"),
        )),
    }
}

/// Case-fold character by character: Unicode lower case, with final sigma folded to sigma
/// (not `str::to_lowercase`, whose context rules the allocation-free comparisons below could
/// not reproduce).
fn lower(s: &str) -> String {
    s.chars().flat_map(fold).collect()
}

fn fold(c: char) -> std::char::ToLowercase {
    // `ς` (final sigma) is the lower case of nothing else; fold it with `σ` as Unicode case
    // folding does. Every other character folds as its lower case.
    let c = if c == 'ς' { 'σ' } else { c };
    c.to_lowercase()
}

impl NumericRange {
    fn parse(arg: &Value, path: &str) -> Result<NumericRange, FilterError> {
        const PAIRS: &str =
            "numeric needs pairs of operator and number, e.g. [\">\", 0, \"<=\", 5]";
        let Value::Array(items) = arg else {
            return Err(invalid(path, PAIRS));
        };
        if items.is_empty() || items.len() % 2 != 0 {
            return Err(invalid(path, PAIRS));
        }
        if items.len() > 4 {
            return Err(invalid(
                path,
                "numeric takes at most two comparisons (a lower and an upper bound)",
            ));
        }
        let mut pairs = Vec::with_capacity(2);
        for pair in items.chunks(2) {
            let Value::String(op) = &pair[0] else {
                return Err(invalid(path, PAIRS));
            };
            if !matches!(op.as_str(), "=" | ">" | ">=" | "<" | "<=") {
                return Err(invalid(
                    path,
                    format!("numeric: unknown operator \"{op}\" (use =, >, >=, <, <=)"),
                ));
            }
            let Some(value) = pair[1].as_f64() else {
                return Err(invalid(
                    path,
                    format!(
                        "numeric: the value after \"{op}\" must be a number, got {}",
                        kind_of(&pair[1])
                    ),
                ));
            };
            pairs.push((op.as_str(), value));
        }
        let bound = |(op, value): (&str, f64)| Bound {
            value,
            inclusive: op.len() == 2 || op == "=",
        };
        let range = match pairs.as_slice() {
            [("=", v)] => NumericRange {
                lower: Some(bound(("=", *v))),
                upper: Some(bound(("=", *v))),
            },
            [(op @ (">" | ">="), v)] => NumericRange {
                lower: Some(bound((op, *v))),
                upper: None,
            },
            [(op, v)] => NumericRange {
                lower: None,
                upper: Some(bound((op, *v))),
            },
            [(lo @ (">" | ">="), lv), (hi @ ("<" | "<="), hv)] => NumericRange {
                lower: Some(bound((lo, *lv))),
                upper: Some(bound((hi, *hv))),
            },
            _ => {
                return Err(invalid(
                    path,
                    "numeric: a range is a lower bound (> or >=) followed by an upper bound (< or <=); = stands alone",
                ));
            }
        };
        if let (Some(lo), Some(hi)) = (range.lower, range.upper)
            && (lo.value > hi.value || (lo.value == hi.value && !(lo.inclusive && hi.inclusive)))
        {
            return Err(invalid(
                path,
                format!(
                    "numeric: the range between {} and {} is empty",
                    lo.value, hi.value
                ),
            ));
        }
        Ok(range)
    }

    fn contains(&self, x: f64) -> bool {
        let above = match self.lower {
            None => true,
            Some(b) if b.inclusive => x >= b.value,
            Some(b) => x > b.value,
        };
        let below = match self.upper {
            None => true,
            Some(b) if b.inclusive => x <= b.value,
            Some(b) => x < b.value,
        };
        above && below
    }
}

impl AnythingBut {
    fn parse(arg: &Value, path: &str) -> Result<AnythingBut, FilterError> {
        const WANT: &str = "anything-but takes a string, a number, a list of strings or of numbers, or an object with prefix, suffix, equals-ignore-case or wildcard";
        match arg {
            Value::String(s) => Ok(AnythingBut::Strings(vec![s.clone()])),
            Value::Number(n) => Ok(AnythingBut::Numbers(vec![n.clone()])),
            Value::Array(items) => {
                if items.is_empty() {
                    return Err(invalid(path, "anything-but: the list is empty"));
                }
                if items.iter().all(Value::is_string) {
                    Ok(AnythingBut::Strings(
                        items
                            .iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect(),
                    ))
                } else if items.iter().all(Value::is_number) {
                    Ok(AnythingBut::Numbers(
                        items.iter().filter_map(Value::as_number).cloned().collect(),
                    ))
                } else {
                    Err(invalid(
                        path,
                        "anything-but: list all strings or all numbers (no mixing, no null, booleans or objects)",
                    ))
                }
            }
            Value::Object(inner) => {
                let mut entries = inner.iter();
                let (Some((op, values)), None) = (entries.next(), entries.next()) else {
                    return Err(invalid(path, WANT));
                };
                if !matches!(
                    op.as_str(),
                    "prefix" | "suffix" | "equals-ignore-case" | "wildcard"
                ) {
                    return Err(invalid(
                        path,
                        format!(
                            "anything-but: unsupported operator \"{op}\" (use prefix, suffix, equals-ignore-case or wildcard)"
                        ),
                    ));
                }
                let strings = anything_but_strings(values, path, op)?;
                match op.as_str() {
                    "prefix" | "suffix" => {
                        if strings.iter().any(String::is_empty) {
                            return Err(invalid(
                                path,
                                format!("anything-but: an empty {op} is not allowed"),
                            ));
                        }
                        Ok(if op == "prefix" {
                            AnythingBut::Prefixes(strings)
                        } else {
                            AnythingBut::Suffixes(strings)
                        })
                    }
                    "equals-ignore-case" => Ok(AnythingBut::IgnoreCase(
                        strings.iter().map(|s| lower(s)).collect(),
                    )),
                    _ => Ok(AnythingBut::Wildcards(
                        strings
                            .iter()
                            .map(|s| Wildcard::parse(s, path))
                            .collect::<Result<_, _>>()?,
                    )),
                }
            }
            other => Err(invalid(path, format!("{WANT}, got {}", kind_of(other)))),
        }
    }

    /// Is `v` (a scalar) one of the excluded values?
    fn excludes(&self, v: &Value) -> bool {
        match self {
            AnythingBut::Strings(list) => v.as_str().is_some_and(|s| list.iter().any(|x| x == s)),
            AnythingBut::Numbers(list) => v
                .as_number()
                .is_some_and(|n| list.iter().any(|x| num_eq(x, n))),
            AnythingBut::Prefixes(list) => v
                .as_str()
                .is_some_and(|s| list.iter().any(|p| s.starts_with(p.as_str()))),
            AnythingBut::Suffixes(list) => v
                .as_str()
                .is_some_and(|s| list.iter().any(|p| s.ends_with(p.as_str()))),
            AnythingBut::IgnoreCase(list) => v
                .as_str()
                .is_some_and(|s| list.iter().any(|p| eq_ignore_case(s, p))),
            AnythingBut::Wildcards(list) => v
                .as_str()
                .is_some_and(|s| list.iter().any(|w| w.matches(s))),
        }
    }
}

fn anything_but_strings(values: &Value, path: &str, op: &str) -> Result<Vec<String>, FilterError> {
    let bad = || {
        invalid(
            path,
            format!("anything-but: {op} takes a string or a non-empty list of strings"),
        )
    };
    match values {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(bad))
            .collect(),
        _ => Err(bad()),
    }
}

impl Wildcard {
    /// `*` matches any run of characters; `\*` is a literal star and `\\` a backslash; other
    /// escapes and consecutive stars are refused (as event-ruler's `WildcardParser` does).
    fn parse(text: &str, path: &str) -> Result<Wildcard, FilterError> {
        let mut segments = vec![String::new()];
        let mut chars = text.char_indices().peekable();
        while let Some((pos, c)) = chars.next() {
            match c {
                '*' => {
                    if matches!(chars.peek(), Some((_, '*'))) {
                        return Err(invalid(
                            path,
                            format!("wildcard: consecutive wildcard characters at position {pos}"),
                        ));
                    }
                    segments.push(String::new());
                }
                '\\' => match chars.next() {
                    Some((_, e @ ('*' | '\\'))) => push_char(&mut segments, e),
                    _ => {
                        return Err(invalid(
                            path,
                            format!(
                                "wildcard: invalid escape character at position {pos} (only \\* and \\\\ are escapes)"
                            ),
                        ));
                    }
                },
                c => push_char(&mut segments, c),
            }
        }
        Ok(Wildcard { segments })
    }

    fn matches(&self, s: &str) -> bool {
        let (first, rest) = match self.segments.split_first() {
            Some(split) => split,
            None => return false,
        };
        let Some((last, middle)) = rest.split_last() else {
            return s == first;
        };
        if s.len() < first.len() + last.len()
            || !s.starts_with(first.as_str())
            || !s.ends_with(last.as_str())
        {
            return false;
        }
        // Both ends are anchored; the middle segments are found leftmost-first in between,
        // which is optimal for patterns whose only metacharacter is `*`.
        let Some(mut window) = s.get(first.len()..s.len() - last.len()) else {
            return false;
        };
        for segment in middle {
            match window.find(segment.as_str()) {
                Some(i) => window = &window[i + segment.len()..],
                None => return false,
            }
        }
        true
    }
}

fn push_char(segments: &mut [String], c: char) {
    if let Some(last) = segments.last_mut() {
        last.push(c);
    }
}

// ---------------------------------------------------------------------------------------------
// Matching (no allocation, no panics)

impl ObjectPattern {
    fn matches_map(&self, map: &Map<String, Value>) -> bool {
        self.fields.iter().all(|f| f.matches_in(map))
            && self
                .ors
                .iter()
                .all(|branches| branches.iter().any(|b| b.matches_map(map)))
    }

    /// Would this object match where the record has nothing (all of its keys missing)?
    fn matches_missing(&self) -> bool {
        self.fields.iter().all(|f| f.node.matches_missing())
            && self
                .ors
                .iter()
                .all(|branches| branches.iter().any(ObjectPattern::matches_missing))
    }

    /// Match below a key of the record: an object is searched, an array is searched element by
    /// element, a scalar has no fields.
    fn matches_value(&self, v: &Value) -> bool {
        match v {
            Value::Object(map) => self.matches_map(map),
            Value::Array(items) => {
                let mut saw_object = false;
                any_object(items, 0, &mut saw_object, &|m| self.matches_map(m))
                    || (!saw_object && self.matches_missing())
            }
            _ => self.matches_missing(),
        }
    }
}

impl Field {
    fn matches_in(&self, map: &Map<String, Value>) -> bool {
        let value = map.get(self.key.as_str());
        if self.data_field
            && let Some(v) = value
        {
            // Lambda's format check: a plain (string) body meets only a plain pattern, a JSON
            // body only a JSON pattern.
            let plain_data = v.is_string();
            let plain_pattern = matches!(self.node, Node::Leaf(_));
            if plain_data != plain_pattern {
                return false;
            }
        }
        match (value, &self.node) {
            (None, node) => node.matches_missing(),
            (Some(v), Node::Leaf(matchers)) => leaf_matches(matchers, v),
            (Some(v), Node::Object(object)) => object.matches_value(v),
        }
    }
}

impl Node {
    fn matches_missing(&self) -> bool {
        match self {
            Node::Leaf(matchers) => matchers.iter().any(|m| matches!(m, Matcher::Exists(false))),
            Node::Object(object) => object.matches_missing(),
        }
    }
}

fn leaf_matches(matchers: &[Matcher], v: &Value) -> bool {
    matchers.iter().any(|m| match m {
        Matcher::Exists(want) => any_leaf(v, 0, &|_| true) == *want,
        m => any_leaf(v, 0, &|x| m.matches_scalar(x)),
    })
}

/// Does `f` hold for a scalar at this position (the value itself, or inside arrays)?
fn any_leaf(v: &Value, depth: usize, f: &dyn Fn(&Value) -> bool) -> bool {
    match v {
        Value::Object(_) => false,
        Value::Array(items) => {
            depth < MAX_ARRAY_DEPTH && items.iter().any(|x| any_leaf(x, depth + 1, f))
        }
        scalar => f(scalar),
    }
}

/// Does `f` hold for an object inside these (possibly nested) arrays? Records in `saw_object`
/// whether there was any object at all.
fn any_object(
    items: &[Value],
    depth: usize,
    saw_object: &mut bool,
    f: &dyn Fn(&Map<String, Value>) -> bool,
) -> bool {
    if depth >= MAX_ARRAY_DEPTH {
        return false;
    }
    for item in items {
        let hit = match item {
            Value::Object(map) => {
                *saw_object = true;
                f(map)
            }
            Value::Array(inner) => any_object(inner, depth + 1, saw_object, f),
            _ => false,
        };
        if hit {
            return true;
        }
    }
    false
}

impl Matcher {
    /// Match one scalar (never an object or array). `exists` is decided by the caller.
    fn matches_scalar(&self, v: &Value) -> bool {
        match self {
            Matcher::Exact(Literal::Str(s)) => v.as_str() == Some(s.as_str()),
            Matcher::Exact(Literal::Num(n)) => v.as_number().is_some_and(|x| num_eq(n, x)),
            Matcher::Exact(Literal::Bool(b)) => v.as_bool() == Some(*b),
            Matcher::Exact(Literal::Null) => v.is_null(),
            Matcher::Prefix(p) => v.as_str().is_some_and(|s| s.starts_with(p.as_str())),
            Matcher::PrefixIgnoreCase(p) => {
                v.as_str().is_some_and(|s| starts_with_ignore_case(s, p))
            }
            Matcher::Suffix(p) => v.as_str().is_some_and(|s| s.ends_with(p.as_str())),
            Matcher::SuffixIgnoreCase(p) => v.as_str().is_some_and(|s| ends_with_ignore_case(s, p)),
            Matcher::EqualsIgnoreCase(p) => v.as_str().is_some_and(|s| eq_ignore_case(s, p)),
            Matcher::Wildcard(w) => v.as_str().is_some_and(|s| w.matches(s)),
            Matcher::Numeric(range) => v.as_f64().is_some_and(|x| range.contains(x)),
            Matcher::AnythingBut(but) => !but.excludes(v),
            Matcher::Exists(_) => false,
        }
    }
}

/// Numeric equality: integers exactly, otherwise as `f64` (so `5` equals `5.0`).
fn num_eq(a: &Number, b: &Number) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x == y;
    }
    matches!((a.as_f64(), b.as_f64()), (Some(x), Some(y)) if x == y)
}

/// `lower` is already lower-cased with [`lower`].
fn eq_ignore_case(s: &str, lower: &str) -> bool {
    s.chars().flat_map(fold).eq(lower.chars())
}

fn starts_with_ignore_case(s: &str, lower: &str) -> bool {
    let mut folded = s.chars().flat_map(fold);
    lower.chars().all(|p| folded.next() == Some(p))
}

fn ends_with_ignore_case(s: &str, lower: &str) -> bool {
    let mut folded = s.chars().rev().flat_map(|c| fold(c).rev());
    lower.chars().rev().all(|p| folded.next() == Some(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pat(p: &str) -> Pattern {
        Pattern::parse(p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    fn m(p: &str, record: Value) -> bool {
        pat(p).matches(&record)
    }

    fn err(p: &str) -> String {
        match Pattern::parse(p) {
            Ok(_) => panic!("{p} should not parse"),
            Err(e) => e.to_string(),
        }
    }

    fn sqs(body: Value) -> Value {
        json!({
            "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
            "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1545082649183"},
            "messageAttributes": {},
            "eventSource": "aws:sqs",
            "body": body,
        })
    }

    // --- exact values -----------------------------------------------------------------------

    #[test]
    fn exact_string() {
        assert!(m(
            r#"{"eventName": ["INSERT"]}"#,
            json!({"eventName": "INSERT"})
        ));
        assert!(!m(
            r#"{"eventName": ["INSERT"]}"#,
            json!({"eventName": "insert"})
        ));
        assert!(!m(
            r#"{"eventName": ["INSERT"]}"#,
            json!({"eventName": "INSERT "})
        ));
    }

    #[test]
    fn list_of_values_is_or() {
        let p = pat(r#"{"body": {"PaymentType": ["Credit", "Debit"]}}"#);
        assert!(p.matches(&sqs(json!({"PaymentType": "Credit"}))));
        assert!(p.matches(&sqs(json!({"PaymentType": "Debit"}))));
        assert!(!p.matches(&sqs(json!({"PaymentType": "Cash"}))));
    }

    #[test]
    fn keys_are_anded() {
        let p = pat(r#"{"body": {"Location": ["New York"], "Day": ["Monday"]}}"#);
        assert!(p.matches(&sqs(
            json!({"Location": "New York", "Day": "Monday", "x": 1})
        )));
        assert!(!p.matches(&sqs(json!({"Location": "New York", "Day": "Tuesday"}))));
        assert!(!p.matches(&sqs(json!({"Location": "New York"}))));
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(m(r#"{"a": [5]}"#, json!({"a": 5})));
        assert!(m(r#"{"a": [5]}"#, json!({"a": 5.0})));
        assert!(m(r#"{"a": [5.0]}"#, json!({"a": 5})));
        assert!(m(r#"{"a": [3.0e2]}"#, json!({"a": 300})));
        assert!(m(r#"{"a": [-7]}"#, json!({"a": -7})));
        assert!(!m(r#"{"a": [5]}"#, json!({"a": 6})));
        assert!(m(
            r#"{"a": [18446744073709551615]}"#,
            json!({"a": u64::MAX})
        ));
        assert!(!m(
            r#"{"a": [18446744073709551615]}"#,
            json!({"a": u64::MAX - 1})
        ));
    }

    #[test]
    fn literals_are_typed() {
        assert!(!m(r#"{"a": ["5"]}"#, json!({"a": 5})));
        assert!(!m(r#"{"a": [5]}"#, json!({"a": "5"})));
        assert!(m(r#"{"a": [true]}"#, json!({"a": true})));
        assert!(!m(r#"{"a": [true]}"#, json!({"a": false})));
        assert!(!m(r#"{"a": ["true"]}"#, json!({"a": true})));
        assert!(!m(r#"{"a": [true]}"#, json!({"a": "true"})));
    }

    #[test]
    fn null_matches_only_null() {
        let p = pat(r#"{"UserID": [null]}"#);
        assert!(p.matches(&json!({"UserID": null})));
        assert!(!p.matches(&json!({})), "missing is not null");
        assert!(!p.matches(&json!({"UserID": ""})));
        assert!(!p.matches(&json!({"UserID": "null"})));
        assert!(!m(r#"{"UserID": ["null"]}"#, json!({"UserID": null})));
    }

    #[test]
    fn empty_string_matches_only_empty_string() {
        let p = pat(r#"{"LastName": [""]}"#);
        assert!(p.matches(&json!({"LastName": ""})));
        assert!(!p.matches(&json!({"LastName": null})));
        assert!(!p.matches(&json!({"LastName": " "})));
        assert!(!p.matches(&json!({})));
    }

    #[test]
    fn missing_key_fails() {
        assert!(!m(r#"{"a": ["x"]}"#, json!({"b": "x"})));
        assert!(!m(r#"{"a": {"b": ["x"]}}"#, json!({"b": "x"})));
        assert!(!m(r#"{"a": {"b": ["x"]}}"#, json!({"a": "x"})));
    }

    #[test]
    fn equals_operator() {
        assert!(m(r#"{"a": [{"equals": "x"}]}"#, json!({"a": "x"})));
        assert!(!m(r#"{"a": [{"equals": "x"}]}"#, json!({"a": "X"})));
    }

    // --- nesting and arrays -----------------------------------------------------------------

    #[test]
    fn nested_dynamodb_keys() {
        let p = pat(
            r#"{"eventName": ["INSERT", "MODIFY"], "dynamodb": {"Keys": {"Id": {"N": ["101"]}}}}"#,
        );
        let rec = |event: &str, n: &str| json!({"eventName": event, "dynamodb": {"Keys": {"Id": {"N": n}}, "SizeBytes": 26}});
        assert!(p.matches(&rec("INSERT", "101")));
        assert!(p.matches(&rec("MODIFY", "101")));
        assert!(!p.matches(&rec("REMOVE", "101")));
        assert!(!p.matches(&rec("INSERT", "102")));
    }

    #[test]
    fn record_array_matches_any_element() {
        let p = pat(r#"{"body": {"tags": ["red"]}}"#);
        assert!(p.matches(&sqs(json!({"tags": ["blue", "red"]}))));
        assert!(p.matches(&sqs(json!({"tags": [["blue"], ["red"]]}))));
        assert!(!p.matches(&sqs(json!({"tags": ["blue", "green"]}))));
        assert!(!p.matches(&sqs(json!({"tags": []}))));
    }

    #[test]
    fn array_of_objects_matches_within_one_element() {
        let p = pat(r#"{"body": {"items": {"sku": ["A"], "qty": [{"numeric": [">", 5]}]}}}"#);
        assert!(p.matches(&sqs(
            json!({"items": [{"sku": "B", "qty": 9}, {"sku": "A", "qty": 6}]})
        )));
        assert!(
            !p.matches(&sqs(
                json!({"items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 9}]})
            )),
            "sku and qty come from different elements"
        );
    }

    #[test]
    fn deep_nesting() {
        let p = pat(r#"{"data": {"a": {"b": {"c": {"d": [1]}}}}}"#);
        assert!(p.matches(&json!({"partitionKey": "k", "data": {"a": {"b": {"c": {"d": 1}}}}})));
        assert!(!p.matches(&json!({"partitionKey": "k", "data": {"a": {"b": {"c": {"d": 2}}}}})));
        assert!(!p.matches(&json!({"partitionKey": "k", "data": {"a": {"b": {"c": 1}}}})));
    }

    // --- string operators -------------------------------------------------------------------

    #[test]
    fn prefix() {
        let p = pat(r#"{"Region": [{"prefix": "us-"}]}"#);
        assert!(p.matches(&json!({"Region": "us-east-1"})));
        assert!(p.matches(&json!({"Region": "us-"})));
        assert!(!p.matches(&json!({"Region": "eu-west-1"})));
        assert!(!p.matches(&json!({"Region": "US-east-1"})));
        assert!(
            !m(r#"{"n": [{"prefix": "12"}]}"#, json!({"n": 123})),
            "numbers are not strings"
        );
    }

    #[test]
    fn prefix_and_suffix_ignore_case() {
        let p = pat(r#"{"a": [{"prefix": {"equals-ignore-case": "EventB"}}]}"#);
        assert!(p.matches(&json!({"a": "eventbridge"})));
        assert!(p.matches(&json!({"a": "EVENTBRIDGE"})));
        assert!(!p.matches(&json!({"a": "event"})));
        let p = pat(r#"{"a": [{"suffix": {"equals-ignore-case": ".PNG"}}]}"#);
        assert!(p.matches(&json!({"a": "photo.png"})));
        assert!(p.matches(&json!({"a": "PHOTO.Png"})));
        assert!(!p.matches(&json!({"a": "photo.jpg"})));
        assert!(!p.matches(&json!({"a": "png"})));
    }

    #[test]
    fn suffix() {
        let p = pat(r#"{"FileName": [{"suffix": ".png"}]}"#);
        assert!(p.matches(&json!({"FileName": "image.png"})));
        assert!(!p.matches(&json!({"FileName": "image.PNG"})));
        assert!(!p.matches(&json!({"FileName": "image.png.txt"})));
    }

    #[test]
    fn equals_ignore_case() {
        let p = pat(r#"{"Name": [{"equals-ignore-case": "alice"}]}"#);
        assert!(p.matches(&json!({"Name": "Alice"})));
        assert!(p.matches(&json!({"Name": "ALICE"})));
        assert!(!p.matches(&json!({"Name": "Alicia"})));
        let p = pat(r#"{"Name": [{"equals-ignore-case": "ΟΔΟΣ"}]}"#);
        assert!(p.matches(&json!({"Name": "οδοσ"})));
        assert!(
            p.matches(&json!({"Name": "Οδος"})),
            "final sigma folds like sigma"
        );
    }

    #[test]
    fn wildcard() {
        let p = pat(r#"{"key": [{"wildcard": "dir/*.png"}]}"#);
        assert!(p.matches(&json!({"key": "dir/a.png"})));
        assert!(p.matches(&json!({"key": "dir/.png"})));
        assert!(p.matches(&json!({"key": "dir/sub/a.png"})));
        assert!(!p.matches(&json!({"key": "dir/a.jpg"})));
        assert!(!p.matches(&json!({"key": "other/a.png"})));
        let p = pat(r#"{"key": [{"wildcard": "*a*b*"}]}"#);
        assert!(p.matches(&json!({"key": "xaxbx"})));
        assert!(p.matches(&json!({"key": "ab"})));
        assert!(!p.matches(&json!({"key": "ba"})));
        let p = pat(r#"{"key": [{"wildcard": "ab*ba"}]}"#);
        assert!(p.matches(&json!({"key": "abba"})));
        assert!(
            !p.matches(&json!({"key": "aba"})),
            "anchors may not overlap"
        );
        assert!(m(r#"{"key": [{"wildcard": "*"}]}"#, json!({"key": ""})));
        assert!(m(
            r#"{"key": [{"wildcard": "exact"}]}"#,
            json!({"key": "exact"})
        ));
        assert!(!m(
            r#"{"key": [{"wildcard": "exact"}]}"#,
            json!({"key": "exactly"})
        ));
        let p = pat(r#"{"key": [{"wildcard": "a\\*b\\\\*"}]}"#);
        assert!(p.matches(&json!({"key": "a*b\\"})));
        assert!(p.matches(&json!({"key": "a*b\\zzz"})));
        assert!(!p.matches(&json!({"key": "axb\\"})));
    }

    // --- anything-but ------------------------------------------------------------------------

    #[test]
    fn anything_but_single_and_list() {
        let p = pat(r#"{"Weather": [{"anything-but": "Raining"}]}"#);
        assert!(p.matches(&json!({"Weather": "Sunny"})));
        assert!(!p.matches(&json!({"Weather": "Raining"})));
        assert!(!p.matches(&json!({})), "anything-but needs the key");
        assert!(
            p.matches(&json!({"Weather": 5})),
            "other types are not excluded"
        );
        assert!(p.matches(&json!({"Weather": null})));
        let p = pat(r#"{"state": [{"anything-but": ["stopped", "overloaded"]}]}"#);
        assert!(p.matches(&json!({"state": "running"})));
        assert!(!p.matches(&json!({"state": "stopped"})));
        assert!(!p.matches(&json!({"state": "overloaded"})));
    }

    #[test]
    fn anything_but_numbers() {
        let p = pat(r#"{"x": [{"anything-but": [100, 200]}]}"#);
        assert!(p.matches(&json!({"x": 150})));
        assert!(!p.matches(&json!({"x": 100})));
        assert!(!p.matches(&json!({"x": 200.0})), "numeric equality");
        assert!(
            p.matches(&json!({"x": "100"})),
            "a string is not the number"
        );
        assert!(!m(r#"{"x": [{"anything-but": 0}]}"#, json!({"x": 0})));
    }

    #[test]
    fn anything_but_operators() {
        let p = pat(r#"{"s": [{"anything-but": {"prefix": "init"}}]}"#);
        assert!(p.matches(&json!({"s": "running"})));
        assert!(!p.matches(&json!({"s": "initializing"})));
        assert!(p.matches(&json!({"s": 7})));
        let p = pat(r#"{"f": [{"anything-but": {"suffix": [".txt", ".md"]}}]}"#);
        assert!(p.matches(&json!({"f": "a.png"})));
        assert!(!p.matches(&json!({"f": "a.md"})));
        let p =
            pat(r#"{"s": [{"anything-but": {"equals-ignore-case": ["Stopped", "OverLoaded"]}}]}"#);
        assert!(!p.matches(&json!({"s": "STOPPED"})));
        assert!(!p.matches(&json!({"s": "overloaded"})));
        assert!(p.matches(&json!({"s": "running"})));
        let p = pat(r#"{"p": [{"anything-but": {"wildcard": "*/lib/*"}}]}"#);
        assert!(p.matches(&json!({"p": "/usr/bin/x"})));
        assert!(!p.matches(&json!({"p": "/usr/lib/x"})));
    }

    #[test]
    fn anything_but_on_arrays_any_element() {
        let p = pat(r#"{"tags": [{"anything-but": "a"}]}"#);
        assert!(p.matches(&json!({"tags": ["a", "b"]})));
        assert!(!p.matches(&json!({"tags": ["a", "a"]})));
        assert!(!p.matches(&json!({"tags": []})));
        assert!(
            !p.matches(&json!({"tags": {"x": "b"}})),
            "objects are not leaves"
        );
    }

    // --- numeric ---------------------------------------------------------------------------

    #[test]
    fn numeric_single_comparisons() {
        let ok = |p: &str, x: Value| {
            m(
                &format!(r#"{{"n": [{{"numeric": {p}}}]}}"#),
                json!({"n": x}),
            )
        };
        assert!(ok(r#"["=", 100]"#, json!(100)));
        assert!(ok(r#"["=", 100]"#, json!(100.0)));
        assert!(!ok(r#"["=", 100]"#, json!(100.5)));
        assert!(ok(r#"[">", 0]"#, json!(0.000001)));
        assert!(!ok(r#"[">", 0]"#, json!(0)));
        assert!(ok(r#"[">=", 0]"#, json!(0)));
        assert!(!ok(r#"[">=", 0]"#, json!(-1)));
        assert!(ok(r#"["<", 10]"#, json!(9.99)));
        assert!(!ok(r#"["<", 10]"#, json!(10)));
        assert!(ok(r#"["<=", 10]"#, json!(10)));
        assert!(!ok(r#"["<=", 10]"#, json!(11)));
        assert!(ok(r#"["<", -5]"#, json!(-6)));
        assert!(ok(r#"[">", 5e9]"#, json!(9_007_199_254_740_993_u64)));
    }

    #[test]
    fn numeric_range_edges() {
        let p = pat(r#"{"Price": [{"numeric": [">", 10, "<=", 20]}]}"#);
        assert!(!p.matches(&json!({"Price": 10})));
        assert!(p.matches(&json!({"Price": 10.5})));
        assert!(p.matches(&json!({"Price": 20})));
        assert!(!p.matches(&json!({"Price": 20.000001})));
        let p = pat(r#"{"Price": [{"numeric": [">=", 10, "<", 20]}]}"#);
        assert!(p.matches(&json!({"Price": 10})));
        assert!(!p.matches(&json!({"Price": 20})));
        let p = pat(r#"{"Price": [{"numeric": [">=", 7, "<=", 7]}]}"#);
        assert!(p.matches(&json!({"Price": 7})));
        assert!(!p.matches(&json!({"Price": 7.1})));
    }

    #[test]
    fn numeric_only_matches_numbers() {
        let p = pat(r#"{"n": [{"numeric": [">", 0]}]}"#);
        assert!(!p.matches(&json!({"n": "46"})));
        assert!(!p.matches(&json!({"n": true})));
        assert!(!p.matches(&json!({"n": null})));
        assert!(!p.matches(&json!({})));
        assert!(p.matches(&json!({"n": [-1, "5", 3]})));
        assert!(!p.matches(&json!({"n": [-1, "5"]})));
    }

    #[test]
    fn mixed_values_and_operators_in_one_list() {
        let p = pat(r#"{"n": ["none", {"numeric": ["<", 0]}, {"prefix": "neg"}]}"#);
        assert!(p.matches(&json!({"n": "none"})));
        assert!(p.matches(&json!({"n": -3})));
        assert!(p.matches(&json!({"n": "negative"})));
        assert!(!p.matches(&json!({"n": 3})));
    }

    // --- exists -----------------------------------------------------------------------------

    #[test]
    fn exists_true() {
        let p = pat(r#"{"customer": {"email": [{"exists": true}]}}"#);
        assert!(p.matches(&json!({"customer": {"email": "a@b.c"}})));
        assert!(
            p.matches(&json!({"customer": {"email": null}})),
            "null is a present value"
        );
        assert!(p.matches(&json!({"customer": {"email": ["a@b.c"]}})));
        assert!(!p.matches(&json!({"customer": {"phone": "555"}})));
        assert!(!p.matches(&json!({})));
        assert!(
            !p.matches(&json!({"customer": {"email": []}})),
            "empty array has no leaf"
        );
        assert!(
            !p.matches(&json!({"customer": {"email": {"work": "a@b.c"}}})),
            "intermediate nodes do not exist for exists"
        );
    }

    #[test]
    fn exists_false() {
        let p = pat(r#"{"customer": {"email": [{"exists": false}]}}"#);
        assert!(p.matches(&json!({"customer": {"phone": "555"}})));
        assert!(
            p.matches(&json!({})),
            "a missing parent means a missing key"
        );
        assert!(
            p.matches(&json!({"customer": "vip"})),
            "a scalar parent has no keys"
        );
        assert!(!p.matches(&json!({"customer": {"email": "a@b.c"}})));
        assert!(
            !p.matches(&json!({"customer": {"email": null}})),
            "null is present"
        );
        assert!(p.matches(&json!({"customer": {"email": {"work": "x"}}})));
        assert!(p.matches(&json!({"customer": [{"phone": "1"}]})));
        assert!(!p.matches(&json!({"customer": [{"email": "1"}]})));
    }

    #[test]
    fn exists_false_combined_with_other_keys() {
        let p = pat(r#"{"body": {"type": ["order"], "cancelled": [{"exists": false}]}}"#);
        assert!(p.matches(&sqs(json!({"type": "order"}))));
        assert!(!p.matches(&sqs(json!({"type": "order", "cancelled": true}))));
        assert!(!p.matches(&sqs(json!({"type": "refund"}))));
    }

    // --- $or --------------------------------------------------------------------------------

    #[test]
    fn or_across_fields() {
        let p = pat(
            r#"{"body": {"source": ["shop"], "$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]}}"#,
        );
        assert!(p.matches(&sqs(json!({"source": "shop", "Location": "New York"}))));
        assert!(p.matches(&sqs(json!({"source": "shop", "Day": "Monday"}))));
        assert!(!p.matches(&sqs(json!({"source": "shop", "Day": "Friday"}))));
        assert!(!p.matches(&sqs(json!({"source": "web", "Day": "Monday"}))));
    }

    #[test]
    fn top_level_or_keeps_data_field_check() {
        let p = pat(r#"{"$or": [{"body": {"a": [1]}}, {"body": [{"prefix": "plain"}]}]}"#);
        assert!(p.matches(&sqs(json!({"a": 1}))));
        assert!(p.matches(&sqs(json!("plain text"))));
        assert!(!p.matches(&sqs(json!("other text"))));
    }

    // --- Lambda data fields -----------------------------------------------------------------

    #[test]
    fn json_pattern_never_matches_plain_body() {
        let p = pat(r#"{"body": {"RequestCode": ["BBBB"]}}"#);
        assert!(p.matches(&sqs(json!({"RequestCode": "BBBB"}))));
        assert!(!p.matches(&sqs(json!("RequestCode BBBB"))));
        // Even a pattern that would match "nothing there" is dropped on a plain body.
        let p = pat(r#"{"body": {"RequestCode": [{"exists": false}]}}"#);
        assert!(!p.matches(&sqs(json!("not json"))));
        assert!(p.matches(&sqs(json!({"Other": 1}))));
    }

    #[test]
    fn plain_pattern_matches_only_plain_body() {
        let p = pat(r#"{"body": [{"prefix": "Result: "}]}"#);
        assert!(p.matches(&sqs(json!("Result: ok"))));
        assert!(!p.matches(&sqs(json!("Error: no"))));
        assert!(
            !p.matches(&sqs(json!({"Result": "ok"}))),
            "JSON body vs plain pattern"
        );
        let p = pat(r#"{"body": [{"anything-but": "x"}]}"#);
        assert!(!p.matches(&sqs(json!(5))), "a JSON number body is JSON");
        assert!(p.matches(&sqs(json!("y"))));
    }

    #[test]
    fn metadata_only_pattern_skips_the_body_check() {
        let p = pat(r#"{"attributes": {"ApproximateReceiveCount": ["1"]}}"#);
        assert!(p.matches(&sqs(json!("plain"))));
        assert!(p.matches(&sqs(json!({"a": 1}))));
        assert!(!m(r#"{"eventSource": ["aws:kinesis"]}"#, sqs(json!("x"))));
    }

    #[test]
    fn kinesis_data_and_metadata() {
        let p = pat(r#"{"partitionKey": ["1"], "data": {"Location": ["Los Angeles"]}}"#);
        assert!(p.matches(&json!({"partitionKey": "1", "data": {"Location": "Los Angeles"}})));
        assert!(!p.matches(&json!({"partitionKey": "2", "data": {"Location": "Los Angeles"}})));
        assert!(!p.matches(&json!({"partitionKey": "1", "data": "Location=Los Angeles"})));
    }

    #[test]
    fn parse_for_rejects_plain_patterns_on_stream_data() {
        let e = Pattern::parse_for(SourceKind::Kinesis, r#"{"data": [{"prefix": "x"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("data: Kinesis data is filtered as JSON"),
            "{e}"
        );
        let e = Pattern::parse_for(SourceKind::DynamoDBStreams, r#"{"dynamodb": ["x"]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("dynamodb: "), "{e}");
        assert!(Pattern::parse_for(SourceKind::Sqs, r#"{"body": [{"prefix": "x"}]}"#).is_ok());
        assert!(Pattern::parse_for(SourceKind::Kinesis, r#"{"data": {"a": ["x"]}}"#).is_ok());
        // For SQS, `data` is an ordinary key: no format check.
        let p = Pattern::parse_for(SourceKind::Sqs, r#"{"data": [{"exists": false}]}"#).unwrap();
        assert!(p.matches(&sqs(json!("x"))));
        let e = FilterSet::parse_for(
            SourceKind::Kinesis,
            [r#"{"a": ["x"]}"#, r#"{"data": ["y"]}"#],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("filterCriteria.filters[1].pattern: data: "),
            "{e}"
        );
    }

    // --- FilterSet ---------------------------------------------------------------------------

    #[test]
    fn filter_set_ors_patterns() {
        let set = FilterSet::parse([
            r#"{"body": {"kind": ["a"]}}"#,
            r#"{"body": {"size": [{"numeric": [">", 10]}]}}"#,
        ])
        .unwrap();
        assert_eq!(set.len(), 2);
        assert!(!set.is_empty());
        assert!(set.matches_view(&sqs(json!({"kind": "a", "size": 1}))));
        assert!(set.matches_view(&sqs(json!({"kind": "b", "size": 11}))));
        assert!(!set.matches_view(&sqs(json!({"kind": "b", "size": 1}))));
        assert!(!set.matches_view(&sqs(json!("plain"))));
    }

    #[test]
    fn empty_filter_set_matches_everything() {
        let set = FilterSet::parse(std::iter::empty()).unwrap();
        assert!(set.is_empty());
        assert!(set.matches_view(&sqs(json!("anything"))));
        assert!(set.matches_view(&json!(null)));
        assert!(FilterSet::default().matches_view(&json!({})));
    }

    #[test]
    fn at_most_five_patterns() {
        let p = r#"{"a": ["x"]}"#;
        assert_eq!(FilterSet::parse([p; 5]).unwrap().len(), 5);
        let e = FilterSet::parse([p; 6]).unwrap_err();
        assert_eq!(e, FilterError::TooManyFilters { count: 6, max: 5 });
        assert_eq!(
            e.to_string(),
            "filterCriteria.filters: at most 5 patterns are allowed, got 6"
        );
    }

    #[test]
    fn filter_set_error_names_the_index() {
        let e = FilterSet::parse([
            r#"{"a": ["x"]}"#,
            r#"{"b": ["y"]}"#,
            r#"{"body": {"price": [{"numeric": [">"]}]}}"#,
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "filterCriteria.filters[2].pattern: body.price: numeric needs pairs of operator and number, e.g. [\">\", 0, \"<=\", 5]"
        );
        let e = FilterSet::parse(["{"]).unwrap_err().to_string();
        assert!(
            e.starts_with("filterCriteria.filters[0].pattern: not valid JSON: "),
            "{e}"
        );
    }

    // --- parse errors -----------------------------------------------------------------------

    #[test]
    fn parse_errors_structure() {
        assert!(err("not json").starts_with("not valid JSON: "));
        assert!(err("").starts_with("not valid JSON: "));
        assert!(err(r#"["a"]"#).starts_with("a pattern must be a JSON object"));
        assert!(err("{}").starts_with("an empty pattern is not allowed"));
        assert_eq!(
            err(r#"{"body": {}}"#),
            "body: empty objects are not allowed"
        );
        assert!(err(r#"{"body": {"a": []}}"#).starts_with("body.a: empty arrays are not allowed"));
        assert!(
            err(r#"{"body": {"a": "x"}}"#)
                .starts_with("body.a: must be an object (to match nested fields) or an array")
        );
        assert!(err(r#"{"a": [["x"]]}"#).starts_with("a: values must be strings"));
        let long = format!(r#"{{"a": ["{}"]}}"#, "x".repeat(MAX_PATTERN_CHARS));
        assert!(matches!(
            Pattern::parse(&long),
            Err(FilterError::TooLong { .. })
        ));
    }

    #[test]
    fn parse_errors_operators() {
        assert!(err(r#"{"a": [{"foo": 1}]}"#).starts_with("a: unknown operator \"foo\""));
        assert!(
            err(r#"{"a": [{}]}"#).starts_with("a: an operator object holds exactly one operator")
        );
        assert!(
            err(r#"{"a": [{"prefix": "x", "suffix": "y"}]}"#)
                .starts_with("a: an operator object holds exactly one operator")
        );
        assert!(err(r#"{"a": [{"prefix": 5}]}"#).starts_with("a: prefix (or"));
        assert!(
            err(r#"{"a": [{"prefix": {"equals": "x"}}]}"#)
                .starts_with("a: prefix takes a string or")
        );
        assert!(err(r#"{"a": [{"suffix": null}]}"#).starts_with("a: suffix (or"));
        assert!(
            err(r#"{"a": [{"equals-ignore-case": 1}]}"#)
                .starts_with("a: equals-ignore-case must be a string")
        );
        assert!(
            err(r#"{"a": [{"exists": "yes"}]}"#).starts_with("a: exists must be true or false")
        );
        assert_eq!(
            err(r#"{"a": [{"cidr": "10.0.0.0/24"}]}"#),
            "a: the cidr operator is not supported"
        );
        assert!(
            err(r#"{"a": [{"wildcard": "a**b"}]}"#)
                .starts_with("a: wildcard: consecutive wildcard characters at position 1")
        );
        assert!(
            err(r#"{"a": [{"wildcard": "a\\b"}]}"#)
                .starts_with("a: wildcard: invalid escape character at position 1")
        );
        assert!(err(r#"{"a": [{"wildcard": "a\\"}]}"#).starts_with("a: wildcard: invalid escape"));
    }

    #[test]
    fn parse_errors_numeric() {
        let e = |n: &str| err(&format!(r#"{{"body": {{"price": [{{"numeric": {n}}}]}}}}"#));
        assert!(e("5").starts_with("body.price: numeric needs pairs of operator and number"));
        assert!(e("[]").starts_with("body.price: numeric needs pairs"));
        assert!(e(r#"[">", 1, "<"]"#).starts_with("body.price: numeric needs pairs"));
        assert!(e(r#"[1, ">"]"#).starts_with("body.price: numeric needs pairs"));
        assert!(e(r#"["!=", 1]"#).starts_with("body.price: numeric: unknown operator \"!=\""));
        assert!(
            e(r#"[">", "1"]"#)
                .starts_with("body.price: numeric: the value after \">\" must be a number")
        );
        assert!(
            e(r#"["<", 5, ">", 0]"#).starts_with("body.price: numeric: a range is a lower bound")
        );
        assert!(
            e(r#"[">", 0, ">", 5]"#).starts_with("body.price: numeric: a range is a lower bound")
        );
        assert!(
            e(r#"["=", 0, "<", 5]"#).starts_with("body.price: numeric: a range is a lower bound")
        );
        assert!(
            e(r#"[">", 0, "<", 5, "<", 6]"#).starts_with("body.price: numeric takes at most two")
        );
        assert!(
            e(r#"[">", 5, "<", 5]"#)
                .starts_with("body.price: numeric: the range between 5 and 5 is empty")
        );
        assert!(e(r#"[">=", 6, "<=", 5]"#).contains("is empty"));
    }

    #[test]
    fn parse_errors_anything_but() {
        assert!(
            err(r#"{"a": [{"anything-but": []}]}"#)
                .starts_with("a: anything-but: the list is empty")
        );
        assert!(
            err(r#"{"a": [{"anything-but": ["x", 1]}]}"#)
                .starts_with("a: anything-but: list all strings or all numbers")
        );
        assert!(
            err(r#"{"a": [{"anything-but": [null]}]}"#)
                .starts_with("a: anything-but: list all strings")
        );
        assert!(err(r#"{"a": [{"anything-but": true}]}"#).starts_with("a: anything-but takes"));
        assert!(
            err(r#"{"a": [{"anything-but": {"numeric": [">", 1]}}]}"#)
                .contains("unsupported operator \"numeric\"")
        );
        assert!(
            err(r#"{"a": [{"anything-but": {"prefix": ""}}]}"#)
                .starts_with("a: anything-but: an empty prefix")
        );
        assert!(
            err(r#"{"a": [{"anything-but": {"prefix": [1]}}]}"#)
                .starts_with("a: anything-but: prefix takes a string")
        );
        assert!(
            err(r#"{"a": [{"anything-but": {"wildcard": "a**"}}]}"#)
                .contains("consecutive wildcard")
        );
    }

    #[test]
    fn parse_errors_or() {
        assert_eq!(
            err(r#"{"body": {"$or": [{"a": ["x"]}]}}"#),
            "body.$or: $or must be an array of at least two objects"
        );
        assert!(err(r#"{"$or": {"a": ["x"]}}"#).starts_with("$or: $or must be an array"));
        assert!(err(r#"{"$or": [{"a": ["x"]}, "b"]}"#).starts_with("$or[1]: $or must be"));
        assert_eq!(
            err(r#"{"body": {"$or": [{"a": ["x"]}, {"b": {"c": [{"numeric": ["<"]}]}}]}}"#),
            "body.$or[1].b.c: numeric needs pairs of operator and number, e.g. [\">\", 0, \"<=\", 5]"
        );
    }

    // --- robustness ------------------------------------------------------------------------

    #[test]
    fn odd_records_do_not_panic() {
        let p = pat(r#"{"a": {"b": [{"exists": false}]}, "c": [{"anything-but": "x"}]}"#);
        for record in [
            json!(null),
            json!("s"),
            json!(1),
            json!([]),
            json!([{"a": 1}]),
        ] {
            assert!(!p.matches(&record));
        }
        let mut deep = json!("x");
        for _ in 0..200 {
            deep = Value::Array(vec![deep]);
        }
        assert!(!pat(r#"{"c": ["x"]}"#).matches(&json!({ "c": deep.clone() })));
        assert!(!pat(r#"{"c": {"d": ["x"]}}"#).matches(&json!({ "c": deep })));
    }

    #[test]
    fn from_str_and_clone() {
        let p: Pattern = r#"{"a": ["x"]}"#.parse().unwrap();
        let q = p.clone();
        assert_eq!(p, q);
        assert!(q.matches(&json!({"a": "x"})));
        assert_eq!(SourceKind::DynamoDBStreams.data_key(), "dynamodb");
    }
}

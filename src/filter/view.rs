//! A record's view as filters see it (see [`super::Pattern::matches`]), built from the record's
//! JSON with only the parts that a set of patterns names: every other value is skipped by the
//! parser without being allocated.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::json::{Json, Number};
use super::pattern::Rule;
use crate::event::EventRecord;

/// The keys that the patterns of a set name, level by level (a dotted path `a.b` is `a` then
/// `b`, as a record's keys are), `$or` branches included. Matching needs nothing else, so a
/// record's view holds only these.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct KeyTree {
    /// A pattern names this path as a leaf (or the tree stands for whole records): the whole
    /// value.
    whole: bool,
    children: BTreeMap<String, KeyTree>,
}

/// The tree of a value taken whole.
pub(crate) static WHOLE: KeyTree = KeyTree {
    whole: true,
    children: BTreeMap::new(),
};

impl KeyTree {
    pub(crate) fn add(&mut self, rule: &Rule) {
        for field in &rule.fields {
            let node = field.path.split('.').fold(&mut *self, |node, segment| {
                node.children.entry(segment.to_owned()).or_default()
            });
            node.whole = true;
        }
    }

    /// The tree below a key of the record; a key with dots (`a.b`) goes down one level per
    /// segment, as its path does.
    fn child(&self, key: &str) -> Option<&KeyTree> {
        key.split('.').try_fold(self, |node, segment| {
            if node.whole {
                Some(&WHOLE)
            } else {
                node.children.get(segment)
            }
        })
    }

    /// The record as filters see it, limited to this tree: its JSON parsed with every unnamed
    /// value skipped, and its data field parsed apart.
    pub(crate) fn view_of<R: EventRecord>(&self, record: &R) -> Json {
        let data = record.filter_data();
        let data_key = data.as_ref().map(|d| d.key);
        let mut view = Vec::new();
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
            if let Ok(Json::Object(fields)) = parse_pruned(fields, &json) {
                view = fields;
            }
        }
        if let Some(data) = data
            && let Some(tree) = self.child(data.key)
        {
            // JSON is UTF-8 throughout; the pruned parse does not look inside the strings it
            // skips, so check the whole text first. (Skipped numbers beyond f64 are valid JSON
            // and are taken as such; nesting beyond 128 levels is not read, and the data is
            // then plain.)
            let json = std::str::from_utf8(data.bytes)
                .ok()
                .and_then(|_| parse_pruned(Pruned { tree, top: None }, data.bytes).ok());
            let value = json.unwrap_or_else(|| match data.plain() {
                serde_json::Value::String(text) => Json::String(text),
                other => Json::from_value(&other),
            });
            view.push((data.key.to_owned(), value));
        }
        Json::Object(view)
    }
}

fn parse_pruned(seed: Pruned<'_>, json: &[u8]) -> serde_json::Result<Json> {
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
        out: &mut Vec<(String, Json)>,
    ) -> Result<(), A::Error> {
        while let Some(role) = map.next_key_seed(&self)? {
            match role {
                KeyRole::Keep(key, tree) => {
                    let value = map.next_value_seed(Pruned { tree, top: None })?;
                    out.push((key, value));
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
    type Value = Json;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        if self.tree.whole && self.top.is_none() {
            // A value that patterns look at as a whole: read from its text, which keeps the
            // order of its keys and how its numbers are written.
            let raw = <&RawValue>::deserialize(deserializer)?;
            Json::read_valid(raw.get()).ok_or_else(|| de::Error::custom("nesting too deep"))
        } else {
            deserializer.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Pruned<'_> {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    // Scalars where the tree is not whole are on the way to a named path, never at one: no
    // pattern looks at their values.
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(Number::new(&v.to_string())))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(Number::new(&v.to_string())))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Number(Number::Double(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Pruned {
            tree: self.tree,
            top: None,
        })? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut out = Vec::new();
        self.fill(&mut map, &mut out)?;
        Ok(Json::Object(out))
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
    out: &'m mut Vec<(String, Json)>,
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

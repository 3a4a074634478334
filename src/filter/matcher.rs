//! Matching compiled rules against a record's view, as event-ruler's array-consistent matcher
//! (`rulesForJSONEvent`) does: a record's key path is its keys joined with `.` (so `{"a.b": 1}`
//! and `{"a": {"b": 1}}` both have `a.b`), array elements do not add to the path, and the values
//! that satisfy a rule's fields must be consistent: two of them inside the same array must be
//! in the same element of it. Matching never panics, and allocates nothing unless an
//! `exists: false` follows fields that take values (then it keeps the routes to those values).

use std::cell::Cell;

use super::json::{Json, Number};
use super::pattern::{
    AnythingBut, CaseVariants, DataFormat, FieldRule, IpAddress, Matcher, NumericRange, Rule,
    Wildcard,
};

/// Nesting of record arrays that matching looks into; deeper elements are ignored, so a
/// hostile record cannot exhaust the stack.
const MAX_ARRAY_DEPTH: usize = 32;

/// Steps an ignore-case match may take (a step is one case form of one character that fits):
/// the two forms of a character rarely both fit, so this only bounds hostile inputs.
const MAX_CASE_STEPS: usize = 1 << 16;

/// Fields that may go two ways in one object of a record (both `a.b` and `a: {b}`) for which
/// every split is tried.
const MAX_FIELDS_TWO_WAYS: u32 = 6;

/// Ways of sending fields to entries that one match may try: only a record that offers many
/// fields two ways comes near it, and it then does not match.
const MAX_SPLITS: usize = 1 << 14;

/// A set of a rule's fields, by index (a rule has at most [`super::pattern::MAX_FIELDS`]).
type Fields = u64;

fn members(mut set: Fields) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let i = set.trailing_zeros();
        (i < Fields::BITS).then(|| {
            set &= set - 1;
            i as usize
        })
    })
}

impl Rule {
    /// Does the record (the root of its view) match this rule?
    pub(crate) fn matches(&self, record: &Json) -> bool {
        let Json::Object(top) = record else {
            return false;
        };
        if !self.fields.iter().all(|f| f.data_format_agrees(top)) {
            return false;
        }
        if self.absence_after_values {
            return self.matches_in_order(record, 0, &mut Vec::new());
        }
        // Every `exists: false` comes before any field that needs a value, so it is about the
        // whole record: no value at its path anywhere.
        let mut needed: Fields = 0;
        for (i, field) in self.fields.iter().enumerate() {
            if field.allows_absence() && !has_leaf(record, &field.path, 0, 0) {
                continue;
            }
            if field.only_absence() {
                return false;
            }
            needed |= 1 << i;
        }
        self.consistent(record, 0, needed, 0, &Cell::new(MAX_SPLITS))
    }

    /// Match the fields from the `k`-th in path order on, each value consistent with the
    /// values `taken` by the fields before it (the routes to them).
    fn matches_in_order(&self, record: &Json, k: usize, taken: &mut Vec<Route>) -> bool {
        let Some(&i) = self.order.get(k) else {
            return true;
        };
        let field = &self.fields[i];
        let fits = |route: &[Step], taken: &[Route]| taken.iter().all(|t| agree(t, route));
        if field.allows_absence()
            && !for_each_leaf(record, &field.path, 0, &mut Vec::new(), &mut |_, route| {
                fits(route, taken)
            })
        {
            return self.matches_in_order(record, k + 1, taken);
        }
        if field.only_absence() {
            return false;
        }
        for_each_leaf(
            record,
            &field.path,
            0,
            &mut Vec::new(),
            &mut |leaf, route| {
                if !fits(route, taken) || !field.matchers.iter().any(|m| m.matches(leaf)) {
                    return false;
                }
                taken.push(route.to_vec());
                let found = self.matches_in_order(record, k + 1, taken);
                taken.pop();
                found
            },
        )
    }

    /// Can every field of `set` be matched by values under `value` (found at a record path of
    /// `consumed` bytes of each field's path), consistently?
    fn consistent(
        &self,
        value: &Json,
        consumed: usize,
        set: Fields,
        depth: usize,
        budget: &Cell<usize>,
    ) -> bool {
        if set == 0 {
            return true;
        }
        match value {
            Json::Array(items) => {
                depth < MAX_ARRAY_DEPTH
                    && items
                        .iter()
                        .any(|item| self.consistent(item, consumed, set, depth + 1, budget))
            }
            Json::Object(entries) => {
                self.consistent_from_entry(entries, 0, consumed, set, depth, budget)
            }
            scalar => members(set).all(|i| {
                let field = &self.fields[i];
                field.path.len() == consumed && field.matchers.iter().any(|m| m.matches(scalar))
            }),
        }
    }

    /// Fields under one object: each goes to an entry whose key continues its path; fields
    /// that go to the same entry must agree within it, fields in different entries are
    /// independent. Entries are taken in turn from `entry` on, each with the fields it gets.
    fn consistent_from_entry(
        &self,
        entries: &[(String, Json)],
        entry: usize,
        consumed: usize,
        set: Fields,
        depth: usize,
        budget: &Cell<usize>,
    ) -> bool {
        if set == 0 {
            return true;
        }
        let Some((key, value)) = entries.get(entry) else {
            return false;
        };
        let goes_to = |i: usize, (key, _): &(String, Json)| {
            continues(&self.fields[i].path, consumed, key).is_some()
        };
        let here: Fields = members(set)
            .filter(|&i| goes_to(i, &entries[entry]))
            .fold(0, |acc, i| acc | 1 << i);
        let Some(next) = members(here)
            .next()
            .and_then(|i| continues(&self.fields[i].path, consumed, key))
        else {
            return self.consistent_from_entry(entries, entry + 1, consumed, set, depth, budget);
        };
        // Fields with no later entry to go to must go here; the others (a record with both
        // `a.b` and `a: {b}`) may go either way. Every split is tried, all of them here first,
        // unless a record offers more than a few fields two ways (hostile, or very odd): then
        // all or none of them.
        let later: Fields = members(here)
            .filter(|&i| entries[entry + 1..].iter().any(|e| goes_to(i, e)))
            .fold(0, |acc, i| acc | 1 << i);
        let forced = here & !later;
        let split = |optional: Fields| {
            let Some(left) = budget.get().checked_sub(1) else {
                return false;
            };
            budget.set(left);
            let taken = forced | optional;
            (taken == 0 || self.consistent(value, next, taken, depth, budget))
                && self.consistent_from_entry(
                    entries,
                    entry + 1,
                    consumed,
                    set & !taken,
                    depth,
                    budget,
                )
        };
        if later.count_ones() > MAX_FIELDS_TWO_WAYS {
            [later, 0].into_iter().any(split)
        } else {
            subsets(later).any(split)
        }
    }
}

/// Every subset of `set`, from `set` itself down to the empty set.
fn subsets(set: Fields) -> impl Iterator<Item = Fields> {
    let mut next = Some(set);
    std::iter::from_fn(move || {
        let current = next?;
        next = (current != 0).then(|| (current - 1) & set);
        Some(current)
    })
}

/// If `key` continues `path` after its first `consumed` bytes, the bytes consumed after it.
fn continues(path: &str, consumed: usize, key: &str) -> Option<usize> {
    let rest = path.get(consumed..)?;
    let rest = if consumed == 0 {
        rest
    } else {
        rest.strip_prefix('.')?
    };
    let after = rest.strip_prefix(key)?;
    let start = path.len() - rest.len();
    (after.is_empty() || after.starts_with('.')).then_some(start + key.len())
}

/// One array on the way to a value: the array (by address) and the element taken.
type Step = (usize, usize);

/// The arrays on the way to a value.
type Route = Vec<Step>;

/// Can two values both be used? Not when they are in different elements of the same array.
fn agree(a: &[Step], b: &[Step]) -> bool {
    a.iter()
        .all(|(array, i)| b.iter().all(|(other, j)| array != other || i == j))
}

/// Call `found` with every scalar at `path` (from its `consumed` bytes on) under `value` and
/// the route to it, until it returns true; whether it did.
fn for_each_leaf(
    value: &Json,
    path: &str,
    consumed: usize,
    route: &mut Route,
    found: &mut dyn FnMut(&Json, &[Step]) -> bool,
) -> bool {
    match value {
        Json::Array(items) => {
            if route.len() >= MAX_ARRAY_DEPTH {
                return false;
            }
            let array = std::ptr::from_ref(value) as usize;
            items.iter().enumerate().any(|(i, item)| {
                route.push((array, i));
                let hit = for_each_leaf(item, path, consumed, route, found);
                route.pop();
                hit
            })
        }
        Json::Object(entries) => entries.iter().any(|(key, value)| {
            continues(path, consumed, key)
                .is_some_and(|next| for_each_leaf(value, path, next, route, found))
        }),
        scalar => consumed == path.len() && found(scalar, route),
    }
}

/// Is there a scalar at `path` (from its `consumed` bytes on) under `value`?
fn has_leaf(value: &Json, path: &str, consumed: usize, depth: usize) -> bool {
    match value {
        Json::Array(items) => {
            depth < MAX_ARRAY_DEPTH
                && items
                    .iter()
                    .any(|item| has_leaf(item, path, consumed, depth + 1))
        }
        Json::Object(entries) => entries.iter().any(|(key, value)| {
            continues(path, consumed, key).is_some_and(|next| has_leaf(value, path, next, depth))
        }),
        _ => consumed == path.len(),
    }
}

impl FieldRule {
    /// Lambda's format check: a plain (string) data field meets only a plain pattern, a JSON
    /// one only a JSON pattern. A record without the data field passes.
    fn data_format_agrees(&self, top: &[(String, Json)]) -> bool {
        let Some(format) = self.data else {
            return true;
        };
        let key = self.path.split('.').next().unwrap_or_default();
        top.iter()
            .filter(|(k, _)| k == key)
            .all(|(_, v)| v.is_string() == (format == DataFormat::Plain))
    }
}

impl Matcher {
    /// Does this matcher accept one scalar of the record (never an object or array)?
    fn matches(&self, v: &Json) -> bool {
        let text = match v {
            Json::String(s) => Some(s.as_str()),
            _ => None,
        };
        match self {
            Matcher::Str(s) => text == Some(s.as_str()),
            Matcher::Ip(ip) => text.and_then(IpAddress::parse) == Some(*ip),
            Matcher::Num(n) => matches!(v, Json::Number(x) if n == x),
            Matcher::Bool(b) => *v == Json::Bool(*b),
            Matcher::Null => *v == Json::Null,
            Matcher::Prefix(p) => text.is_some_and(|s| s.starts_with(p.as_str())),
            Matcher::Suffix(p) => text.is_some_and(|s| s.ends_with(p.as_str())),
            Matcher::PrefixIgnoreCase(p) => text.is_some_and(|s| p.is_prefix_of(s)),
            Matcher::SuffixIgnoreCase(p) => text.is_some_and(|s| p.is_suffix_of(s)),
            Matcher::EqualsIgnoreCase(p) => text.is_some_and(|s| p.equals(s)),
            Matcher::Wildcard(w) => text.is_some_and(|s| w.matches(s)),
            Matcher::Numeric(range) => {
                matches!(v, Json::Number(Number::Double(x)) if range.contains(*x))
            }
            Matcher::Exists(exists) => *exists,
            Matcher::AnythingBut(but) => !but.excludes(v),
            Matcher::Cidr(range) => text
                .and_then(IpAddress::parse)
                .is_some_and(|ip| range.low <= ip && ip <= range.high),
        }
    }
}

impl NumericRange {
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
    /// Is `v` (a scalar) one of the excluded values?
    fn excludes(&self, v: &Json) -> bool {
        let text = match v {
            Json::String(s) => s.as_str(),
            Json::Number(n) => {
                return matches!(self, AnythingBut::Numbers(list) if list.contains(n));
            }
            _ => return false,
        };
        match self {
            AnythingBut::Strings(list) => list.iter().any(|x| x == text),
            AnythingBut::Numbers(_) => false,
            AnythingBut::Prefixes(list) => list.iter().any(|p| text.starts_with(p.as_str())),
            AnythingBut::Suffixes(list) => list.iter().any(|p| text.ends_with(p.as_str())),
            AnythingBut::IgnoreCase(list) => list.iter().any(|p| p.equals(text)),
            AnythingBut::Wildcards(list) => list.iter().any(|w| w.matches(text)),
        }
    }
}

impl CaseVariants {
    fn equals(&self, s: &str) -> bool {
        self.match_forward(s, 0, true, &mut { MAX_CASE_STEPS })
    }

    fn is_prefix_of(&self, s: &str) -> bool {
        self.match_forward(s, 0, false, &mut { MAX_CASE_STEPS })
    }

    fn is_suffix_of(&self, s: &str) -> bool {
        self.match_back(s, self.chars.len(), &mut { MAX_CASE_STEPS })
    }

    /// Do the pattern's characters from the `i`-th on match the start of `s` (all of `s` when
    /// `whole`)?
    fn match_forward(&self, s: &str, i: usize, whole: bool, budget: &mut usize) -> bool {
        let Some(forms) = self.chars.get(i) else {
            return !whole || s.is_empty();
        };
        distinct(forms).any(|form| {
            s.strip_prefix(form)
                .is_some_and(|rest| spend(budget) && self.match_forward(rest, i + 1, whole, budget))
        })
    }

    /// Do the pattern's first `n` characters match the end of `s`?
    fn match_back(&self, s: &str, n: usize, budget: &mut usize) -> bool {
        let Some(forms) = n.checked_sub(1).and_then(|i| self.chars.get(i)) else {
            return true;
        };
        distinct(forms).any(|form| {
            s.strip_suffix(form)
                .is_some_and(|rest| spend(budget) && self.match_back(rest, n - 1, budget))
        })
    }
}

/// A character's case forms, each once.
fn distinct(forms: &[Box<str>; 2]) -> impl Iterator<Item = &str> {
    let count = if forms[0] == forms[1] { 1 } else { 2 };
    forms.iter().take(count).map(|form| &**form)
}

fn spend(budget: &mut usize) -> bool {
    match budget.checked_sub(1) {
        Some(left) => {
            *budget = left;
            true
        }
        None => false,
    }
}

impl Wildcard {
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

//! Behaviour of filter patterns, case by case (the differential test covers the rest).

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
fn exactly_operator() {
    assert!(m(r#"{"a": [{"exactly": "x"}]}"#, json!({"a": "x"})));
    assert!(!m(r#"{"a": [{"exactly": "x"}]}"#, json!({"a": "X"})));
    // event-ruler knows no `equals`; refusing it beats matching what Lambda would refuse.
    assert!(err(r#"{"a": [{"equals": "x"}]}"#).contains("names it \"exactly\""));
    assert!(err(r#"{"a": [{"exactly": 5}]}"#).starts_with("a: exactly must be a string"));
}

// --- nesting and arrays -----------------------------------------------------------------

#[test]
fn nested_dynamodb_keys() {
    let p =
        pat(r#"{"eventName": ["INSERT", "MODIFY"], "dynamodb": {"Keys": {"Id": {"N": ["101"]}}}}"#);
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
        !p.matches(&json!({"Name": "Οδος"})),
        "final sigma is neither case form of Σ (event-ruler maps each character, not words)"
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
    let p = pat(r#"{"s": [{"anything-but": {"equals-ignore-case": ["Stopped", "OverLoaded"]}}]}"#);
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
    assert!(ok(r#"[">", 5e9]"#, json!(9_007_199_254_740_992_u64)));
    // No double holds 2^53 + 1: event-ruler does not compare it with anything.
    assert!(!ok(r#"[">", 5e9]"#, json!(9_007_199_254_740_993_u64)));
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
    let p = pat(r#"{"Price": [{"numeric": ["=", 7]}]}"#);
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
    assert!(set.matches_value(&sqs(json!({"kind": "a", "size": 1}))));
    assert!(set.matches_value(&sqs(json!({"kind": "b", "size": 11}))));
    assert!(!set.matches_value(&sqs(json!({"kind": "b", "size": 1}))));
    assert!(!set.matches_value(&sqs(json!("plain"))));
}

#[test]
fn empty_filter_set_matches_everything() {
    let set = FilterSet::parse(std::iter::empty()).unwrap();
    assert!(set.is_empty());
    assert!(set.matches_value(&sqs(json!("anything"))));
    assert!(set.matches_value(&json!(null)));
    assert!(FilterSet::default().matches_value(&json!({})));
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
    assert!(err(r#"{"a": [{}]}"#).starts_with("a: an operator object holds exactly one operator"));
    assert!(
        err(r#"{"a": [{"prefix": "x", "suffix": "y"}]}"#)
            .starts_with("a: an operator object holds exactly one operator")
    );
    assert!(err(r#"{"a": [{"prefix": 5}]}"#).starts_with("a: prefix (or"));
    assert!(
        err(r#"{"a": [{"prefix": {"equals": "x"}}]}"#).starts_with("a: prefix takes a string or")
    );
    assert!(err(r#"{"a": [{"suffix": null}]}"#).starts_with("a: suffix (or"));
    assert!(
        err(r#"{"a": [{"equals-ignore-case": 1}]}"#)
            .starts_with("a: equals-ignore-case must be a string")
    );
    assert!(err(r#"{"a": [{"exists": "yes"}]}"#).starts_with("a: exists must be true or false"));
    for bad in [
        "10.0.0.0",
        "10.0.0.0/32",
        "::/128",
        "10.0.0/8",
        "10.0.0.0/-1",
        "10.0.0.0/8/8",
        "x/8",
    ] {
        assert!(
            err(&format!(r#"{{"a": [{{"cidr": "{bad}"}}]}}"#)).starts_with("a: cidr: "),
            "{bad}"
        );
    }
    assert!(err(r#"{"a": [{"cidr": 10}]}"#).starts_with("a: cidr must be a string"));
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
    assert!(e(r#"["<", 5, ">", 0]"#).starts_with("body.price: numeric: a range is a lower bound"));
    assert!(e(r#"[">", 0, ">", 5]"#).starts_with("body.price: numeric: a range is a lower bound"));
    assert!(e(r#"["=", 0, "<", 5]"#).starts_with("body.price: numeric: a range is a lower bound"));
    assert!(e(r#"[">", 0, "<", 5, "<", 6]"#).starts_with("body.price: numeric takes at most two"));
    assert!(
        e(r#"[">", 5, "<", 5]"#).starts_with(
            "body.price: numeric: the lower bound 5 must be less than the upper bound 5"
        )
    );
    assert!(e(r#"[">=", 5, "<=", 5]"#).contains("must be less than"));
    assert!(e(r#"[">=", 6, "<=", 5]"#).contains("must be less than"));
    assert!(e(r#"["<", 0.10000000000000001]"#).contains("cannot be compared exactly"));
}

#[test]
fn parse_errors_anything_but() {
    assert!(
        err(r#"{"a": [{"anything-but": []}]}"#).starts_with("a: anything-but: the list is empty")
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
        err(r#"{"a": [{"anything-but": {"wildcard": "a**"}}]}"#).contains("consecutive wildcard")
    );
}

#[test]
fn parse_errors_or() {
    assert_eq!(
        err(r#"{"body": {"$or": [{"a": ["x"]}]}}"#),
        "body.$or: $or must be an array of at least two objects"
    );
    // Not an array of objects: `$or` is then an ordinary key, as event-ruler reads it.
    assert!(m(r#"{"$or": {"a": ["x"]}}"#, json!({"$or": {"a": "x"}})));
    assert!(m(r#"{"$or": ["x"]}"#, json!({"$or": "x"})));
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

// --- agreement with event-ruler (each family tests/filter_differential.rs found) ----------

/// A record whose JSON is exactly `text` (no data field), to match through the pruned view.
#[derive(serde::Serialize)]
struct RawRecord(Box<serde_json::value::RawValue>);

impl crate::event::EventRecord for RawRecord {
    fn item_identifier(&self) -> &str {
        "raw"
    }

    fn filter_data(&self) -> Option<crate::event::FilterData<'_>> {
        None
    }
}

/// Does `pattern` match the record `text`, through its pruned view and through the whole
/// record text? (Both must agree.)
fn mj(pattern: &str, text: &str) -> bool {
    let record = RawRecord(serde_json::value::RawValue::from_string(text.into()).unwrap());
    let via_view = FilterSet::parse([pattern]).unwrap().matches(&record);
    assert_eq!(
        via_view,
        pat(pattern).matches_json(text),
        "{pattern} on {text}"
    );
    via_view
}

#[test]
fn a_path_named_twice_keeps_its_last_mention() {
    let p = r#"{"a": [1], "$or": [{"a": [2]}, {"b": [3]}]}"#;
    assert!(mj(p, r#"{"a": 2, "b": 0}"#));
    assert!(mj(p, r#"{"a": 1, "b": 3}"#));
    assert!(!mj(p, r#"{"a": 1, "b": 0}"#));
    let p = r#"{"$or": [{"a": [2]}, {"b": [3]}], "a": [1]}"#;
    assert!(mj(p, r#"{"a": 1, "b": 0}"#));
    assert!(!mj(p, r#"{"a": 2, "b": 0}"#));
    assert!(mj(r#"{"a": {"b": [1]}, "a.b": [2]}"#, r#"{"a": {"b": 2}}"#));
    assert!(!mj(
        r#"{"a": {"b": [1]}, "a.b": [2]}"#,
        r#"{"a": {"b": 1}}"#
    ));
    assert!(mj(r#"{"a": [1], "a": [2]}"#, r#"{"a": 2}"#));
}

#[test]
fn keys_with_dots_are_paths() {
    for record in [
        r#"{"a": {"b": 1}}"#,
        r#"{"a.b": 1}"#,
        r#"{"a": [{"b": 1}]}"#,
    ] {
        assert!(mj(r#"{"a.b": [1]}"#, record), "{record}");
        assert!(mj(r#"{"a": {"b": [1]}}"#, record), "{record}");
    }
    assert!(mj(r#"{"a": {"b.c": [1]}}"#, r#"{"a.b": {"c": 1}}"#));
    assert!(mj(
        r#"{"a": {"b": [1], "c": [2]}}"#,
        r#"{"a.b": 1, "a": {"c": 2}}"#
    ));
    assert!(!mj(r#"{"a.b": [1]}"#, r#"{"a": {"b.c": 1}}"#));
}

#[test]
fn exists_false_is_checked_against_the_values_taken_before_it() {
    // Alone, or first in path order: no value anywhere.
    let p = r#"{"a": {"b": [{"exists": false}]}}"#;
    assert!(!mj(p, r#"{"a": [{"b": 1}, {"c": 2}]}"#));
    assert!(mj(p, r#"{"a": [{"c": 2}]}"#));
    let p = r#"{"a": {"b": [{"exists": false}], "c": [2]}}"#;
    assert!(!mj(p, r#"{"a": [{"b": 1}, {"c": 2}]}"#));
    // After a field that took a value: no value beside it.
    let p = r#"{"b": {"a": ["K"], "c": [{"exists": false}]}}"#;
    assert!(mj(p, r#"{"b": [{"a": "K"}, {"c": 2}]}"#));
    assert!(mj(p, r#"{"b": [{"c": 2}, {"a": "K"}]}"#));
    assert!(!mj(p, r#"{"b": [{"a": "K", "c": 2}]}"#));
    assert!(!mj(p, r#"{"b": {"a": "K", "c": 2}}"#));
}

#[test]
fn values_in_one_array_element() {
    let p = r#"{"a": {"b": [1], "c": [2]}}"#;
    assert!(!mj(p, r#"{"a": [{"b": 1}, {"c": 2}]}"#));
    assert!(mj(p, r#"{"a": [{"b": 1, "c": 2}]}"#));
    assert!(mj(p, r#"{"a": [[{"b": 1, "c": 2}]]}"#));
    assert!(mj(p, r#"{"a": [{"b": [1, 3], "c": 2}]}"#));
    assert!(mj(
        r#"{"x": [1], "y": [2]}"#,
        r#"{"x": [1, 3], "y": [0, 2]}"#
    ));
    // A key (`b`) that could also lead to the paths does not split an element's fields.
    assert!(!mj(
        r#"{"b.c": {"a": [{"anything-but": {"prefix": "Foo"}}], "a.b": [false]}}"#,
        r#"{"b.c": [{"a": "xFoo", "a.b": "y"}, {"a": "Foox", "a.b": false}], "b": 1}"#
    ));
}

#[test]
fn ignore_case_maps_the_pattern_as_event_ruler_does() {
    assert!(mj(
        r#"{"a": [{"equals-ignore-case": "straße"}]}"#,
        r#"{"a": "STRASSE"}"#
    ));
    assert!(!mj(
        r#"{"a": [{"equals-ignore-case": "STRASSE"}]}"#,
        r#"{"a": "straße"}"#
    ));
    assert!(mj(
        r#"{"a": [{"equals-ignore-case": "ÉCOLE"}]}"#,
        r#"{"a": "école"}"#
    ));
    assert!(!mj(
        r#"{"a": [{"equals-ignore-case": "ς"}]}"#,
        r#"{"a": "σ"}"#
    ));
    // A title-case letter stands for its lower and upper case forms only, not for itself.
    for (form, matches) in [("ǆ", true), ("Ǆ", true), ("ǅ", false)] {
        let record = format!(r#"{{"a": "{form}"}}"#);
        assert_eq!(
            mj(r#"{"a": [{"equals-ignore-case": "ǅ"}]}"#, &record),
            matches,
            "{form}"
        );
    }
    assert!(mj(
        r#"{"a": [{"prefix": {"equals-ignore-case": "ß"}}]}"#,
        r#"{"a": "SSx"}"#
    ));
    assert!(mj(
        r#"{"a": [{"suffix": {"equals-ignore-case": "ß"}}]}"#,
        r#"{"a": "xSS"}"#
    ));
    assert!(!mj(
        r#"{"a": [{"suffix": {"equals-ignore-case": "ß"}}]}"#,
        r#"{"a": "xS"}"#
    ));
}

#[test]
fn numbers_a_double_cannot_hold_match_only_their_text() {
    let p = r#"{"a": [12345678901234567890]}"#;
    assert!(mj(p, r#"{"a": 12345678901234567890}"#));
    assert!(!mj(p, r#"{"a": 12345678901234567891}"#));
    assert!(!mj(r#"{"a": [0.1]}"#, r#"{"a": 0.10000000000000001}"#));
    assert!(mj(r#"{"a": [0.1]}"#, r#"{"a": 1e-1}"#));
    assert!(mj(r#"{"a": [5]}"#, r#"{"a": 5.0}"#));
    assert!(!mj(
        r#"{"a": [{"numeric": ["<", 10]}]}"#,
        r#"{"a": 12345678901234567891}"#
    ));
    assert!(
        err(r#"{"a": [{"anything-but": 9007199254740993}]}"#)
            .contains("cannot be compared exactly")
    );
}

#[test]
fn cidr_blocks() {
    let v4 = r#"{"a": [{"cidr": "10.0.0.0/24"}]}"#;
    assert!(mj(v4, r#"{"a": "10.0.0.7"}"#));
    assert!(mj(v4, r#"{"a": ["x", "10.0.0.255"]}"#));
    assert!(!mj(v4, r#"{"a": "10.0.1.7"}"#));
    assert!(!mj(v4, r#"{"a": 10}"#));
    assert!(mj(
        r#"{"a": [{"cidr": "10.0.0.7/24"}]}"#,
        r#"{"a": "10.0.0.3"}"#
    ));
    let v6 = r#"{"a": [{"cidr": "2001:db8::/32"}]}"#;
    assert!(mj(v6, r#"{"a": "2001:DB8:0::1"}"#));
    assert!(!mj(v6, r#"{"a": "2001:db9::1"}"#));
    assert!(mj(r#"{"a": [{"cidr": "::1/127"}]}"#, r#"{"a": "::1"}"#));
}

#[test]
fn string_literals_that_are_ip_addresses() {
    assert!(mj(r#"{"a": ["10.0.0.1"]}"#, r#"{"a": "10.000.0.1"}"#));
    assert!(mj(r#"{"a": ["10.0.0.1"]}"#, r#"{"a": "::ffff:a00:1"}"#));
    assert!(!mj(r#"{"a": ["10.0.0.1"]}"#, r#"{"a": "10.0.0.2"}"#));
    assert!(mj(r#"{"a": ["::1"]}"#, r#"{"a": "0:0::1"}"#));
    assert!(mj(r#"{"a": ["2001:DB8::A"]}"#, r#"{"a": "2001:db8::a"}"#));
    // Only exact values: other operators see text.
    assert!(mj(
        r#"{"a": [{"anything-but": "10.0.0.1"}]}"#,
        r#"{"a": "10.00.0.1"}"#
    ));
    assert!(!mj(
        r#"{"a": [{"exactly": "10.0.0.1"}]}"#,
        r#"{"a": "10.00.0.1"}"#
    ));
}

#[test]
fn a_record_offering_many_fields_two_ways_is_matched_in_bounded_time() {
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let pattern = format!(
        r#"{{"a": {{{}}}}}"#,
        keys.iter()
            .map(|k| format!(r#""{k}": [1]"#))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let dotted: Vec<String> = keys.iter().map(|k| format!(r#""a.{k}": 1"#)).collect();
    let nested: Vec<String> = keys.iter().map(|k| format!(r#""{k}": 1"#)).collect();
    let record = format!(
        r#"{{{}, "a": {{{}}}}}"#,
        dotted.join(", "),
        nested.join(", ")
    );
    let started = std::time::Instant::now();
    assert!(mj(&pattern, &record));
    let record = format!(r#"{{{}, "a": {{"k0": 2}}}}"#, dotted[1..].join(", "));
    assert!(!mj(&pattern, &record));
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

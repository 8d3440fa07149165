//! The SAM template (`infra/template.yaml`) as CloudFormation hands it to the SAM transform: the
//! YAML short tags in their long form and the `AWS::LanguageExtensions` transform applied, so a
//! test finds every resource under the logical id it is deployed with.
//!
//! The template folds what is repeated per segment type and per function into `Fn::ForEach`
//! loops; a test that looked at the file as written would see one `Fn::ForEach::…` key where
//! five queues are deployed. [`sam_template`] expands those loops (nested ones too, in any
//! section), replaces the loop identifier in keys and strings (`${Id}`, `&{Id}`) and in
//! `{"Ref": "Id"}`, then resolves what the transform resolves once the loop values are known:
//! `Fn::FindInMap` over the template's `Mappings` with literal keys, and `Fn::Sub` whose result
//! is a literal string (so `{"Ref": {"Fn::Sub": "${TypeName}Queue"}}` becomes
//! `{"Ref": "HighBalanceQueue"}`). Everything that needs a deployed stack (`${AWS::StackName}`,
//! `!GetAtt` values, parameters) stays as it is.
//!
//! ```ignore
//! let doc = crate::support::template::sam_template();
//! assert_eq!(doc["Resources"]["HighBalanceQueue"]["Type"], "AWS::SQS::Queue");
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};

/// The template's place in the repository.
pub const TEMPLATE_PATH: &str = "infra/template.yaml";

const FOR_EACH_PREFIX: &str = "Fn::ForEach::";

/// `infra/template.yaml` as the SAM transform sees it: short tags in long form, every
/// `Fn::ForEach` expanded and the mapping look-ups and literal `Fn::Sub`s inside resolved.
/// The `Transform` list is kept as written. Panics with the reason when the file is not a valid
/// template of that shape (a test failure is the right answer then).
pub fn sam_template() -> Value {
    expand_language_extensions(&written_template())
}

/// `infra/template.yaml` as written, with the short tags (`!Ref X`, `!GetAtt X.Arn`, `!Sub …`)
/// in their long form (`{"Ref": "X"}`, `{"Fn::GetAtt": ["X", "Arn"]}`, `{"Fn::Sub": …}`) and the
/// loops still folded.
pub fn written_template() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(TEMPLATE_PATH);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let yaml: serde_norway::Value = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{TEMPLATE_PATH}: {e}"));
    yaml_to_json(yaml)
}

/// What `AWS::LanguageExtensions` does to a template, as far as this service's template uses it:
/// the loops expanded, then the `Fn::FindInMap`s and literal `Fn::Sub`s resolved.
pub fn expand_language_extensions(doc: &Value) -> Value {
    let expanded = expand_loops(doc, &BTreeMap::new());
    let mappings = expanded.get("Mappings").cloned().unwrap_or(Value::Null);
    resolve_literals(&expanded, &mappings)
}

/// A YAML value with CloudFormation's short tags as JSON in their long form.
pub fn yaml_to_json(value: serde_norway::Value) -> Value {
    use serde_norway::Value as Yaml;
    match value {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => json!(b),
        Yaml::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => json!(u),
            (None, Some(i)) => json!(i),
            _ => json!(n.as_f64()),
        },
        Yaml::String(s) => json!(s),
        Yaml::Sequence(items) => Value::Array(items.into_iter().map(yaml_to_json).collect()),
        Yaml::Mapping(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(k, v)| (k.as_str().expect("mapping keys are strings").to_owned(), yaml_to_json(v)))
                .collect(),
        ),
        Yaml::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!').to_owned();
            let value = yaml_to_json(tagged.value);
            match name.as_str() {
                "Ref" => json!({ "Ref": value }),
                "GetAtt" => {
                    let parts = match value {
                        Value::String(s) => {
                            let (resource, attribute) = s.split_once('.').expect("!GetAtt Resource.Attribute");
                            json!([resource, attribute])
                        }
                        other => other,
                    };
                    json!({ "Fn::GetAtt": parts })
                }
                _ => json!({ format!("Fn::{name}"): value }),
            }
        }
    }
}

/// Every `Fn::ForEach::Name: [Identifier, [values…], {OutputKey: OutputValue}]` replaced by its
/// outputs, once per value, with `bindings` (the identifiers of the loops around) applied.
fn expand_loops(value: &Value, bindings: &BTreeMap<String, String>) -> Value {
    match value {
        Value::Object(entries) => {
            if let (1, Some(Value::String(target))) = (entries.len(), entries.get("Ref"))
                && let Some(bound) = bindings.get(target)
            {
                return json!(bound);
            }
            let mut out = Map::new();
            for (key, item) in entries {
                if let Some(loop_name) = key.strip_prefix(FOR_EACH_PREFIX) {
                    for (output_key, output) in expand_one_loop(loop_name, item, bindings) {
                        assert!(
                            out.insert(output_key.clone(), output).is_none(),
                            "Fn::ForEach::{loop_name} produces {output_key} twice"
                        );
                    }
                } else {
                    let key = substitute(key, bindings);
                    let expanded = expand_loops(item, bindings);
                    assert!(out.insert(key.clone(), expanded).is_none(), "{key} is declared twice");
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|i| expand_loops(i, bindings)).collect()),
        Value::String(s) => json!(substitute(s, bindings)),
        other => other.clone(),
    }
}

fn expand_one_loop(name: &str, spec: &Value, bindings: &BTreeMap<String, String>) -> Vec<(String, Value)> {
    let parts = spec
        .as_array()
        .filter(|p| p.len() == 3)
        .unwrap_or_else(|| panic!("Fn::ForEach::{name} takes [Identifier, Collection, {{OutputKey: OutputValue}}]"));
    let identifier = parts[0].as_str().unwrap_or_else(|| panic!("Fn::ForEach::{name}: the identifier is a string"));
    let collection = expand_loops(&parts[1], bindings);
    let values = collection
        .as_array()
        .unwrap_or_else(|| panic!("Fn::ForEach::{name}: the collection is a literal list, not {collection}"));
    let fragment = parts[2].as_object().unwrap_or_else(|| panic!("Fn::ForEach::{name}: the fragment is a mapping"));
    let mut outputs = Vec::new();
    for value in values {
        let value = value.as_str().unwrap_or_else(|| panic!("Fn::ForEach::{name}: {value} is not a string"));
        let mut inner = bindings.clone();
        inner.insert(identifier.to_owned(), value.to_owned());
        let Value::Object(expanded) = expand_loops(&Value::Object(fragment.clone()), &inner) else {
            unreachable!("an object expands to an object")
        };
        for (key, output) in expanded {
            assert!(
                key.contains(value) || key.contains(&alphanumeric(value)),
                "Fn::ForEach::{name}: output key {key} does not name the loop value {value}"
            );
            outputs.push((key, output));
        }
    }
    outputs
}

/// `${Id}` → the value, `&{Id}` → the value without its non-alphanumeric characters.
fn substitute(text: &str, bindings: &BTreeMap<String, String>) -> String {
    bindings.iter().fold(text.to_owned(), |s, (id, value)| {
        s.replace(&format!("${{{id}}}"), value).replace(&format!("&{{{id}}}"), &alphanumeric(value))
    })
}

fn alphanumeric(value: &str) -> String {
    value.chars().filter(char::is_ascii_alphanumeric).collect()
}

/// `Fn::FindInMap` with literal keys → the mapped value; `Fn::Sub` whose text has no variable
/// left once its own literal variables are put in → that text. Innermost first, so a `Fn::Sub`
/// whose variable is a resolved `Fn::FindInMap` resolves too.
fn resolve_literals(value: &Value, mappings: &Value) -> Value {
    match value {
        Value::Object(entries) => {
            let resolved: Map<String, Value> =
                entries.iter().map(|(k, v)| (k.clone(), resolve_literals(v, mappings))).collect();
            if resolved.len() == 1 {
                if let Some(args) = resolved.get("Fn::FindInMap")
                    && let Some(found) = find_in_map(args, mappings)
                {
                    return found;
                }
                if let Some(args) = resolved.get("Fn::Sub")
                    && let Some(text) = literal_sub(args)
                {
                    return json!(text);
                }
            }
            Value::Object(resolved)
        }
        Value::Array(items) => Value::Array(items.iter().map(|i| resolve_literals(i, mappings)).collect()),
        other => other.clone(),
    }
}

fn find_in_map(args: &Value, mappings: &Value) -> Option<Value> {
    let [map, top, second] = args.as_array()?.as_slice() else { return None };
    let (map, top, second) = (map.as_str()?, top.as_str()?, second.as_str()?);
    let found = &mappings[map][top][second];
    assert!(!found.is_null(), "Fn::FindInMap [{map}, {top}, {second}] names no entry of Mappings");
    Some(found.clone())
}

fn literal_sub(args: &Value) -> Option<String> {
    let (text, variables) = match args {
        Value::String(text) => (text.clone(), Map::new()),
        Value::Array(parts) => match parts.as_slice() {
            [Value::String(text), Value::Object(variables)] => (text.clone(), variables.clone()),
            _ => return None,
        },
        _ => return None,
    };
    let mut text = text;
    for (name, value) in &variables {
        text = text.replace(&format!("${{{name}}}"), value.as_str()?);
    }
    (!text.contains("${")).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_expand_with_mappings_refs_and_subs_resolved() {
        let folded = json!({
            "Mappings": {"Types": {"HighBalance": {"Type": "highBalance"}, "LowBalance": {"Type": "lowBalance"}}},
            "Resources": {
                "Fn::ForEach::Queues": ["Name", ["HighBalance", "LowBalance"], {
                    "${Name}Queue": {"Type": "AWS::SQS::Queue", "Properties": {
                        "Tag": {"Fn::FindInMap": ["Types", {"Ref": "Name"}, "Type"]},
                        "Dlq": {"Fn::GetAtt": [{"Fn::Sub": "${Name}Dlq"}, "Arn"]},
                        "Topic": {"Ref": {"Fn::Sub": "${Name}Topic"}},
                        "Text": {"Fn::Sub": ["${Type} of ${AWS::StackName}", {"Type": {"Fn::FindInMap": ["Types", {"Ref": "Name"}, "Type"]}}]}
                    }}
                }],
                "Other": {"Type": "AWS::SNS::Topic"}
            }
        });
        let doc = expand_language_extensions(&folded);
        let queue = &doc["Resources"]["LowBalanceQueue"]["Properties"];
        assert_eq!(queue["Tag"], "lowBalance");
        assert_eq!(queue["Dlq"], json!({"Fn::GetAtt": ["LowBalanceDlq", "Arn"]}));
        assert_eq!(queue["Topic"], json!({"Ref": "LowBalanceTopic"}));
        assert_eq!(queue["Text"], json!({"Fn::Sub": ["${Type} of ${AWS::StackName}", {"Type": "lowBalance"}]}));
        assert_eq!(doc["Resources"].as_object().map(Map::len), Some(3));
    }
}

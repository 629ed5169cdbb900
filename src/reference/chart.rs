//! The chart's README: every value, from values.schema.json (type, limits, description) and
//! values.yaml (default). A value without a description in the schema is an error, so a new value
//! cannot reach the chart undocumented.

use std::fmt::Write;

use serde_json::Value;

use super::{GENERATED, ReferenceError, cell};

const SCHEMA: &str = include_str!("../../charts/lineworks-operator/values.schema.json");
const VALUES: &str = include_str!("../../charts/lineworks-operator/values.yaml");
const CHART: &str = include_str!("../../charts/lineworks-operator/Chart.yaml");

pub fn readme() -> Result<String, ReferenceError> {
    let schema: Value = serde_json::from_str(SCHEMA)?;
    let defaults: Value = serde_yaml_ng::from_str(VALUES)?;
    let chart: Value = serde_yaml_ng::from_str(CHART)?;
    let mut out = String::from(GENERATED);
    let _ = writeln!(
        out,
        "# lineworks-operator chart\n\n{}\n\n```sh\nhelm install lineworks-operator charts/lineworks-operator \\\n  --namespace lineworks-operator --create-namespace\n```\n\nThe CRD is in `crds/` (Helm installs it on first install only; see [Installing](../../docs/install.md) for upgrades, uninstalling and what each setting is for). `values.schema.json` refuses unknown or wrong values with the path of the mistake.\n\n## Values\n\n| value | type | default | description |\n|---|---|---|---|",
        chart["description"].as_str().unwrap_or_default()
    );
    let mut rows = Vec::new();
    leaves(&schema, &defaults, "", &mut rows)?;
    for (path, kind, default, description) in rows {
        let _ = writeln!(
            out,
            "| `{path}` | {kind} | {default} | {} |",
            cell(&description)
        );
    }
    Ok(out)
}

/// (path, type, default, description) of every value: a leaf is a value that is not an object
/// with properties, or one the schema describes as a whole (such as `resources`).
fn leaves(
    schema: &Value,
    defaults: &Value,
    path: &str,
    rows: &mut Vec<(String, String, String, String)>,
) -> Result<(), ReferenceError> {
    let described = schema.get("description").and_then(Value::as_str);
    if let (Some(properties), None) = (schema["properties"].as_object(), described)
        && schema["type"] == "object"
    {
        for (name, property) in properties {
            let child = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            leaves(property, &defaults[name.as_str()], &child, rows)?;
        }
        return Ok(());
    }
    let description = described.ok_or_else(|| ReferenceError::Undescribed(path.to_string()))?;
    rows.push((
        path.to_string(),
        kind(schema),
        default(defaults),
        description.to_string(),
    ));
    Ok(())
}

fn kind(schema: &Value) -> String {
    if let Some(values) = schema["enum"].as_array() {
        let names: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
        return names.join(" \\| ").replace('"', "");
    }
    let base = match &schema["type"] {
        Value::String(t) => t.clone(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".into(),
    };
    match (schema["minimum"].as_i64(), schema["maximum"].as_i64()) {
        (Some(min), Some(max)) => format!("{base} {min}–{max}"),
        (Some(min), None) => format!("{base} ≥ {min}"),
        _ => base,
    }
}

/// The default as YAML would need it written (JSON is valid YAML); a plain string unquoted.
fn default(value: &Value) -> String {
    match value {
        Value::Null => "—".into(),
        Value::String(s) if !s.is_empty() => format!("`{s}`"),
        other => format!("`{other}`"),
    }
}

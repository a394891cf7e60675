//! Composite tools: one tool of the vMCP that runs a workflow of backend tool calls
//! (`spec.config.compositeTools`, or a VirtualMCPCompositeToolDefinition's spec).
//! Typed field by field and checked as the vMCP would check them at start (ids,
//! dependencies and their cycles, tool references, templates, parameters), so a
//! definition that cannot run is refused with its path instead of crashing the pod.
//! Step types other than `tool` (elicitation, forEach), skippable steps' default
//! results and output schemas are not carried out by this release: refused by name.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::kinds::virtualmcp::config::GoDuration;
use crate::shared::problem::Problem;

/// One composite tool, in the vMCP's field names.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompositeTool {
    pub name: String,
    pub description: String,
    /// A JSON Schema of type object: the tool's arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
    pub steps: Vec<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<crate::kinds::toolconfig::ToolAnnotations>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    pub id: String,
    /// Only `tool` is carried out.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// A backend tool: its name as served (`fetch_fetch`) or `<backend>.<tool>`.
    pub tool: String,
    /// Argument values; strings may hold templates (`{{.params.url}}`,
    /// `{{.steps.<id>.output}}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub arguments: BTreeMap<String, Value>,
    /// A template; the step runs when it renders true.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub condition: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<OnError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OnError {
    pub action: ErrorAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<GoDuration>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ErrorAction {
    Abort,
    Continue,
    Retry,
}

/// The most steps a composite tool may have (a bound on what one call can fan out to).
pub const MAX_STEPS: usize = 50;

/// A name the vMCP accepts for a tool or a tool reference.
fn tool_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Whether every `{{` in `text` is closed by a `}}` before the next `{{`.
fn balanced_template(text: &str) -> bool {
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        match (after.find("}}"), after.find("{{")) {
            (Some(close), Some(next)) if next < close => return false,
            (Some(close), _) => rest = &after[close + 2..],
            (None, _) => return false,
        }
    }
    !rest.contains("}}")
}

/// Reads `value` (at `path`) as a composite tool and checks it; every problem with
/// its path.
pub fn parse(value: &Value, path: &str) -> Result<CompositeTool, Vec<Problem>> {
    // Step types not carried out are named before the typed read refuses their fields.
    let mut problems: Vec<Problem> = value
        .get("steps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, step)| {
            let kind = step.get("type").and_then(Value::as_str).unwrap_or("tool");
            (kind != "tool").then(|| {
                Problem::at(
                    format!("{path}.steps[{i}].type"),
                    format!("{kind:?} steps are not carried out by this operator release; use tool steps"),
                )
            })
        })
        .collect();
    if value.get("output").is_some() {
        problems.push(Problem::at(format!("{path}.output"), "not carried out by this operator release; remove it"));
    }
    // In some of ToolHive's examples, but in no version of its schema (its kubectl
    // refuses it as an unknown field too).
    if value.get("failureMode").is_some() {
        problems.push(Problem::at(
            format!("{path}.failureMode"),
            "not a field of a composite tool (what a failed step does is its onError); remove it",
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let tool: CompositeTool = crate::shared::problem::typed(value, path).map_err(|problem| vec![problem])?;
    let problems = check(&tool, path);
    if problems.is_empty() { Ok(tool) } else { Err(problems) }
}

fn check(tool: &CompositeTool, path: &str) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut problem = |field: String, message: String| out.push(Problem::at(field, message));
    if !tool_name(&tool.name) {
        problem(format!("{path}.name"), format!("{:?}: letters, digits, '.', '_' and '-', starting with a letter or digit", tool.name));
    }
    if tool.description.trim().is_empty() {
        problem(format!("{path}.description"), "required: say what the tool does (clients show it)".into());
    }
    if let Some(parameters) = &tool.parameters
        && parameters.get("type").and_then(Value::as_str) != Some("object")
    {
        problem(format!("{path}.parameters"), "must be a JSON Schema with type: object".into());
    }
    if tool.steps.is_empty() || tool.steps.len() > MAX_STEPS {
        problem(format!("{path}.steps"), format!("between 1 and {MAX_STEPS} steps"));
    }
    let mut ids = BTreeSet::new();
    for (i, step) in tool.steps.iter().enumerate() {
        let at = format!("{path}.steps[{i}]");
        if step.id.is_empty() {
            problem(format!("{at}.id"), "required".into());
        } else if !ids.insert(step.id.as_str()) {
            problem(format!("{at}.id"), format!("{:?} is used by an earlier step", step.id));
        }
        if !tool_name(&step.tool) {
            problem(
                format!("{at}.tool"),
                format!("{:?}: name a backend tool as served (<backend>_<tool>) or as <backend>.<tool>", step.tool),
            );
        }
        let templates = step.arguments.iter().filter_map(|(k, v)| Some((format!("{at}.arguments.{k}"), v.as_str()?)));
        for (field, text) in templates.chain((!step.condition.is_empty()).then(|| (format!("{at}.condition"), step.condition.as_str()))) {
            if !balanced_template(text) {
                problem(field, "a template's {{ is not closed by }}".into());
            }
        }
    }
    for (i, step) in tool.steps.iter().enumerate() {
        for dependency in step.depends_on.iter().filter(|d| !ids.contains(d.as_str())) {
            problem(format!("{path}.steps[{i}].dependsOn"), format!("{dependency:?} is not a step of this tool"));
        }
    }
    if let Some(cycle) = cycle(&tool.steps) {
        problem(format!("{path}.steps"), format!("the steps depend on each other in a cycle: {}", cycle.join(" -> ")));
    }
    out
}

/// A dependency cycle among `steps`, as the ids along it, if there is one.
fn cycle(steps: &[Step]) -> Option<Vec<String>> {
    let depends: BTreeMap<&str, &[String]> = steps.iter().map(|s| (s.id.as_str(), s.depends_on.as_slice())).collect();
    // 0: not seen, 1: on the current path, 2: done.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    fn visit<'a>(
        id: &'a str,
        depends: &BTreeMap<&'a str, &'a [String]>,
        state: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> bool {
        match state.get(id).copied().unwrap_or(0) {
            1 => {
                path.push(id);
                return true;
            }
            2 => return false,
            _ => {}
        }
        state.insert(id, 1);
        path.push(id);
        for next in depends.get(id).copied().unwrap_or_default() {
            if depends.contains_key(next.as_str()) && visit(next, depends, state, path) {
                return true;
            }
        }
        path.pop();
        state.insert(id, 2);
        false
    }
    for id in depends.keys() {
        let mut path = Vec::new();
        if visit(id, &depends, &mut state, &mut path) {
            let last = *path.last()?;
            let start = path.iter().position(|p| *p == last)?;
            return Some(path[start..].iter().map(|s| s.to_string()).collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(value: Value) -> Vec<String> {
        parse(&value, "spec.config.compositeTools[0]").err().unwrap_or_default().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_two_step_workflow_reads_and_writes_back_as_the_vmcp_reads_it() {
        let value = json!({"name": "remember_and_recall", "description": "Stores a fact, then reads the graph",
        "parameters": {"type": "object", "properties": {"fact": {"type": "string"}}, "required": ["fact"]},
        "timeout": "1m",
        "steps": [
            {"id": "store", "tool": "memory.create_entities",
             "arguments": {"entities": [{"name": "fact", "entityType": "note", "observations": ["{{.params.fact}}"]}]},
             "onError": {"action": "retry", "retryCount": 2, "retryDelay": "1s"}},
            {"id": "recall", "type": "tool", "tool": "memory_read_graph", "dependsOn": ["store"]}
        ]});
        let tool = parse(&value, "spec.config.compositeTools[0]").unwrap();
        assert_eq!(tool.steps.len(), 2);
        let back = serde_json::to_value(&tool).unwrap();
        assert_eq!(back["steps"][1]["dependsOn"], json!(["store"]));
        assert_eq!(back["steps"][0]["onError"], json!({"action": "retry", "retryCount": 2, "retryDelay": "1s"}));
        assert_eq!(back["parameters"], value["parameters"]);
    }

    #[test]
    fn what_cannot_run_is_named_with_its_path() {
        let base = |steps: Value| json!({"name": "t", "description": "d", "steps": steps});
        let found = problems(base(json!([{"id": "a", "tool": "x.y", "dependsOn": ["b"]}, {"id": "b", "tool": "x.z", "dependsOn": ["a"]}])));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("spec.config.compositeTools[0].steps: the steps depend on each other in a cycle: a -> b -> a"),
            "{found:?}"
        );
        let found = problems(base(json!([{"id": "a", "tool": "x.y"}, {"id": "a", "tool": "bad tool", "dependsOn": ["zz"]}])));
        assert_eq!(
            found,
            [
                "spec.config.compositeTools[0].steps[1].id: \"a\" is used by an earlier step",
                "spec.config.compositeTools[0].steps[1].tool: \"bad tool\": name a backend tool as served (<backend>_<tool>) or as <backend>.<tool>",
                "spec.config.compositeTools[0].steps[1].dependsOn: \"zz\" is not a step of this tool"
            ]
        );
        let found = problems(base(json!([{"id": "a", "tool": "x.y", "arguments": {"u": "{{.params.url"}}])));
        assert_eq!(found, ["spec.config.compositeTools[0].steps[0].arguments.u: a template's {{ is not closed by }}"]);
        let found = problems(base(json!([{"id": "ask", "type": "elicitation", "message": "ok?"}])));
        assert!(
            found[0].starts_with("spec.config.compositeTools[0].steps[0].type: \"elicitation\" steps are not carried out"),
            "{found:?}"
        );
        let found = problems(json!({"name": "t", "description": "", "steps": [], "parameters": {"type": "string"}}));
        assert_eq!(found.len(), 3, "{found:?}");
        let found = problems(base(json!([{"id": "a", "tool": "x.y", "onError": {"action": "abort", "maxRetries": 2}}])));
        assert!(found[0].starts_with("spec.config.compositeTools[0].steps[0].onError.maxRetries: unknown field"), "{found:?}");
    }

    #[test]
    fn templates_are_balanced_or_not() {
        for good in ["plain", "{{.params.x}}", "a {{.x}} b {{.y}}"] {
            assert!(balanced_template(good), "{good}");
        }
        for bad in ["{{.x", "{{ {{.x}} }}", ".x}}", "{{.x}} }}"] {
            assert!(!balanced_template(bad), "{bad}");
        }
    }
}

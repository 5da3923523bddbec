//! The `ZENML_KUBERNETES_WORKLOAD_MANAGER_*` JSON values (pod resources, node selector,
//! tolerations, pod failure policy) as the API server reads them in a runner Job: each
//! goes through its k8s-openapi type (nothing dropped on the way) and the API server's
//! own rules for it, with a diagnostic at the line that sets it.

use super::names::{dns_label, label_value, qualified_name};
use super::{Diagnostic, Located};
use crate::k8s::round_trip;
use crate::model::WorkloadManager;
use k8s_openapi::api::batch::v1::PodFailurePolicy;
use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use serde_json::Value;

const BASE: &str = "/spec/workloadManager";
const P: &str = "ZENML_KUBERNETES_WORKLOAD_MANAGER_";

pub(super) fn check<T>(doc: &Located<T>, wm: &WorkloadManager, out: &mut Vec<Diagnostic>) {
    let mut err = |pointer: String, message: String| {
        out.push(Diagnostic::error(
            &doc.file,
            doc.pos(&pointer),
            &pointer,
            message,
        ))
    };
    if let Some(resources) = &wm.pod_resources {
        let value = crate::k8s::resources_json(resources);
        if let Err(why) = round_trip::<ResourceRequirements>(&value) {
            err(
                format!("{BASE}/podResources"),
                format!("{P}POD_RESOURCES: Kubernetes cannot read it as pod resources: {why}"),
            );
        }
    }
    // The node selector's keys and values are label rules, checked with the project's labels.
    let selector = serde_json::to_value(&wm.node_selector).unwrap_or_default();
    if let Err(why) = round_trip::<std::collections::BTreeMap<String, String>>(&selector) {
        err(
            format!("{BASE}/nodeSelector"),
            format!("{P}NODE_SELECTOR: Kubernetes cannot read it as a node selector: {why}"),
        );
    }
    for (i, t) in wm.tolerations.iter().enumerate() {
        let at = |field: &str| format!("{BASE}/tolerations/{i}{field}");
        let value = serde_json::to_value(t).unwrap_or_default();
        if let Err(why) = round_trip::<Toleration>(&value) {
            err(
                at(""),
                format!("{P}TOLERATIONS: Kubernetes cannot read toleration {i}: {why}"),
            );
            continue;
        }
        // The API server's rules (ValidateTolerations).
        let exists = matches!(t.operator, Some(crate::model::TolerationOperator::Exists));
        match t.key.as_deref().filter(|k| !k.is_empty()) {
            Some(key) => {
                if let Err(why) = qualified_name(key) {
                    err(
                        at("/key"),
                        format!("{P}TOLERATIONS: invalid toleration key `{key}`: {why}"),
                    );
                }
            }
            None if !exists => err(
                at(""),
                format!("{P}TOLERATIONS: a toleration without a key must have `operator: Exists`"),
            ),
            None => {}
        }
        if exists && t.value.as_deref().is_some_and(|v| !v.is_empty()) {
            err(
                at("/value"),
                format!("{P}TOLERATIONS: a toleration with `operator: Exists` must have no value"),
            );
        }
        if let Some(value) = t.value.as_deref().filter(|v| !v.is_empty() && !exists)
            && let Err(why) = label_value(value)
        {
            err(
                at("/value"),
                format!("{P}TOLERATIONS: invalid toleration value `{value}`: {why}"),
            );
        }
        if t.toleration_seconds.is_some()
            && !matches!(t.effect, Some(crate::model::TaintEffect::NoExecute))
        {
            err(
                at("/tolerationSeconds"),
                format!("{P}TOLERATIONS: `tolerationSeconds` needs `effect: NoExecute`"),
            );
        }
    }
    if let Some(policy) = &wm.pod_failure_policy {
        pod_failure_policy(policy, &mut err);
    }
}

/// `value` as Kubernetes keeps it (`null` when it does not read).
fn json_of<T: serde::de::DeserializeOwned + serde::Serialize>(value: &Value) -> Value {
    serde_json::from_value::<T>(value.clone())
        .ok()
        .and_then(|t| serde_json::to_value(t).ok())
        .unwrap_or(Value::Null)
}

/// `.rules[2].unknown` as a JSON pointer, `/rules/2/unknown`.
fn path_to_pointer(path: &str) -> String {
    path.replace('[', ".")
        .replace(']', "")
        .split('.')
        .filter(|s| !s.is_empty())
        .map(|s| format!("/{s}"))
        .collect()
}

/// The API server's rules for a Job's `podFailurePolicy` (validatePodFailurePolicy), for
/// the runner Jobs ZenML creates (no `backoffLimitPerIndex`, so no `FailIndex`).
///
/// Kept in one piece: it follows the API server's `validatePodFailurePolicy` rule by
/// rule, to be read beside it.
fn pod_failure_policy(
    policy: &serde_json::Map<String, Value>,
    err: &mut impl FnMut(String, String),
) {
    let base = format!("{BASE}/podFailurePolicy");
    let what = format!("{P}POD_FAILURE_POLICY");
    let value = Value::Object(policy.clone());
    if let Err(why) = round_trip::<PodFailurePolicy>(&value) {
        // At the key Kubernetes drops, when that is the problem.
        let at = crate::k8s::first_lost(&value, &json_of::<PodFailurePolicy>(&value), "")
            .map(|path| format!("{base}{}", path_to_pointer(&path)))
            .unwrap_or(base);
        err(
            at,
            format!("{what}: Kubernetes cannot read it as a pod failure policy: {why}"),
        );
        return;
    }
    let Ok(policy) = serde_json::from_value::<PodFailurePolicy>(value) else {
        return;
    };
    if policy.rules.len() > 20 {
        err(
            format!("{base}/rules"),
            format!("{what}: at most 20 rules, not {}", policy.rules.len()),
        );
    }
    for (i, rule) in policy.rules.iter().enumerate() {
        let at = |field: &str| format!("{base}/rules/{i}{field}");
        match rule.action.as_str() {
            "FailJob" | "Ignore" | "Count" => {}
            "FailIndex" => err(
                at("/action"),
                format!(
                    "{what}: `FailIndex` needs `backoffLimitPerIndex`, which ZenML's runner Jobs do not set"
                ),
            ),
            other => err(
                at("/action"),
                format!("{what}: unknown action `{other}` (FailJob, Ignore, Count or FailIndex)"),
            ),
        }
        match (&rule.on_exit_codes, &rule.on_pod_conditions) {
            (Some(_), Some(_)) => err(
                at(""),
                format!("{what}: a rule has `onExitCodes` or `onPodConditions`, not both"),
            ),
            (None, None) => err(
                at(""),
                format!("{what}: a rule needs `onExitCodes` or `onPodConditions`"),
            ),
            _ => {}
        }
        if let Some(codes) = &rule.on_exit_codes {
            let at = |field: &str| at(&format!("/onExitCodes{field}"));
            if !matches!(codes.operator.as_str(), "In" | "NotIn") {
                err(
                    at("/operator"),
                    format!(
                        "{what}: unknown operator `{}` (In or NotIn)",
                        codes.operator
                    ),
                );
            }
            if let Some(name) = &codes.container_name
                && let Err(why) = dns_label(name)
            {
                err(
                    at("/containerName"),
                    format!("{what}: invalid container name `{name}`: {why}"),
                );
            }
            let values = &codes.values;
            if values.is_empty() || values.len() > 255 {
                err(
                    at("/values"),
                    format!("{what}: 1 to 255 exit codes, not {}", values.len()),
                );
            }
            for (j, v) in values.iter().enumerate() {
                if codes.operator == "In" && *v == 0 {
                    err(
                        at(&format!("/values/{j}")),
                        format!("{what}: exit code 0 cannot be `In` a failure rule"),
                    );
                }
                if j > 0 && values[j - 1] >= *v {
                    err(
                        at(&format!("/values/{j}")),
                        format!("{what}: exit codes must be in increasing order without repeats"),
                    );
                }
            }
        }
        if let Some(patterns) = &rule.on_pod_conditions {
            if patterns.len() > 20 {
                err(
                    at("/onPodConditions"),
                    format!("{what}: at most 20 pod conditions, not {}", patterns.len()),
                );
            }
            for (j, c) in patterns.iter().enumerate() {
                let at = |field: &str| at(&format!("/onPodConditions/{j}{field}"));
                if let Err(why) = qualified_name(&c.type_) {
                    err(
                        at("/type"),
                        format!("{what}: invalid pod condition type `{}`: {why}", c.type_),
                    );
                }
                if !matches!(c.status.as_str(), "True" | "False" | "Unknown") {
                    err(
                        at("/status"),
                        format!("{what}: a pod condition's status is True, False or Unknown"),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::load::{SourceFile, error_lines};

    fn errors(settings: &str) -> Vec<String> {
        let text = format!(
            "apiVersion: berth/v1alpha1\nkind: Project\nmetadata: {{name: p}}\nspec:\n  namespace: p\n  workloadManager:\n    namespace: runners\n    serviceAccount: s\n    runnerImage: z\n{settings}"
        );
        error_lines(vec![SourceFile::new("p.yaml", text)])
    }

    #[test]
    fn accepted_values_pass() {
        let found = errors(
            "    tolerations:\n      - {key: dedicated, operator: Equal, value: runners, effect: NoSchedule}\n      - {operator: Exists}\n      - {key: k, operator: Exists, effect: NoExecute, tolerationSeconds: 30}\n    podFailurePolicy:\n      rules:\n        - {action: FailJob, onExitCodes: {operator: In, values: [1, 42]}}\n        - {action: Ignore, onPodConditions: [{type: DisruptionTarget, status: \"True\"}]}\n",
        );
        assert!(found.is_empty(), "{found:#?}");
    }

    #[test]
    fn tolerations_as_the_api_server_reads_them_at_their_line() {
        let found = errors(
            "    tolerations:\n      - {value: x}\n      - {key: k, operator: Exists, value: v}\n      - {key: k, value: \"a b\"}\n      - {key: k, effect: NoSchedule, tolerationSeconds: 5}\n",
        );
        assert_eq!(
            found,
            [
                "p.yaml:11:9: error: spec.workloadManager.tolerations[0]: ZENML_KUBERNETES_WORKLOAD_MANAGER_TOLERATIONS: a toleration without a key must have `operator: Exists`",
                "p.yaml:12:43: error: spec.workloadManager.tolerations[1].value: ZENML_KUBERNETES_WORKLOAD_MANAGER_TOLERATIONS: a toleration with `operator: Exists` must have no value",
                "p.yaml:13:25: error: spec.workloadManager.tolerations[2].value: ZENML_KUBERNETES_WORKLOAD_MANAGER_TOLERATIONS: invalid toleration value `a b`: only letters, digits, `-`, `_` and `.` are allowed",
                "p.yaml:14:57: error: spec.workloadManager.tolerations[3].tolerationSeconds: ZENML_KUBERNETES_WORKLOAD_MANAGER_TOLERATIONS: `tolerationSeconds` needs `effect: NoExecute`",
            ]
        );
    }

    #[test]
    fn pod_failure_policy_as_the_api_server_reads_it_at_its_line() {
        let found = errors(
            "    podFailurePolicy:\n      rules:\n        - action: Retry\n          onExitCodes: {operator: In, values: [0, 3, 2]}\n        - action: FailJob\n        - action: Ignore\n          onPodConditions: [{type: DisruptionTarget, status: Maybe}]\n          unknown: 1\n",
        );
        assert_eq!(
            found,
            [
                "p.yaml:17:20: error: spec.workloadManager.podFailurePolicy.rules[2].unknown: ZENML_KUBERNETES_WORKLOAD_MANAGER_POD_FAILURE_POLICY: Kubernetes cannot read it as a pod failure policy: it does not know `rules[2].unknown` and drops it"
            ]
        );
        let found = errors(
            "    podFailurePolicy:\n      rules:\n        - action: Retry\n          onExitCodes: {operator: Is, values: [0, 3, 2]}\n        - action: FailJob\n        - action: Ignore\n          onPodConditions: [{type: DisruptionTarget, status: Maybe}]\n",
        );
        assert_eq!(
            found,
            [
                "p.yaml:12:19: error: spec.workloadManager.podFailurePolicy.rules[0].action: ZENML_KUBERNETES_WORKLOAD_MANAGER_POD_FAILURE_POLICY: unknown action `Retry` (FailJob, Ignore, Count or FailIndex)",
                "p.yaml:13:35: error: spec.workloadManager.podFailurePolicy.rules[0].onExitCodes.operator: ZENML_KUBERNETES_WORKLOAD_MANAGER_POD_FAILURE_POLICY: unknown operator `Is` (In or NotIn)",
                "p.yaml:13:54: error: spec.workloadManager.podFailurePolicy.rules[0].onExitCodes.values[2]: ZENML_KUBERNETES_WORKLOAD_MANAGER_POD_FAILURE_POLICY: exit codes must be in increasing order without repeats",
                "p.yaml:14:11: error: spec.workloadManager.podFailurePolicy.rules[1]: ZENML_KUBERNETES_WORKLOAD_MANAGER_POD_FAILURE_POLICY: a rule needs `onExitCodes` or `onPodConditions`",
                "p.yaml:16:62: error: spec.workloadManager.podFailurePolicy.rules[2].onPodConditions[0].status: ZENML_KUBERNETES_WORKLOAD_MANAGER_POD_FAILURE_POLICY: a pod condition's status is True, False or Unknown",
            ]
        );
    }
}

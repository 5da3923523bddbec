//! Resource deltas: what a change adds to or removes from what the workspaces ask of the
//! cluster — CPU and memory requests and limits, GPUs, storage and the number of
//! workspaces — per project and in total, worked out from the rendered objects (desired
//! against live, or head against base).
//!
//! What counts, and why:
//!
//! - A workspace is a StatefulSet. Its pods reserve what the scheduler reserves for one pod
//!   (the larger of the containers' sum and each init container's peak, sidecars included),
//!   times `spec.replicas` (1 when absent). So a suspended workspace (replicas 0) reserves
//!   no CPU, memory or GPU, and a suspension or a wake shows as the change it is.
//! - A container's request defaults to its limit when only the limit is set, as the API
//!   server does: desired objects and the live objects the server defaulted then agree.
//! - Limits are the sum of the limits declared (a container without one adds nothing).
//! - GPUs are the extended resources named `*/gpu` (`nvidia.com/gpu`, `amd.com/gpu`).
//! - Storage is what the claim templates ask for, once per replica and at least once: the
//!   claims of a scaled-down StatefulSet stay. (berth also keeps a deleted workspace's
//!   claims, as the plan's notes say: its storage leaves the delta, the disk stays until
//!   the claims are deleted by hand.)
//!
//! Amounts are integers (millicores, bytes) so that sums are exact: the delta of a change
//! and of its inverse add up to zero.

use crate::quantity;
use crate::render::{MANAGED_BY, PROJECT_LABEL};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Add, AddAssign, Neg, Sub};

/// Resources of some workspaces, or the change of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Resources {
    pub workspaces: i64,
    pub cpu_requests_millicores: i64,
    pub cpu_limits_millicores: i64,
    pub memory_requests_bytes: i64,
    pub memory_limits_bytes: i64,
    pub gpus: i64,
    pub storage_bytes: i64,
}

impl Resources {
    fn fields(self) -> [i64; 7] {
        [
            self.workspaces,
            self.cpu_requests_millicores,
            self.cpu_limits_millicores,
            self.memory_requests_bytes,
            self.memory_limits_bytes,
            self.gpus,
            self.storage_bytes,
        ]
    }

    fn from_fields(f: [i64; 7]) -> Resources {
        Resources {
            workspaces: f[0],
            cpu_requests_millicores: f[1],
            cpu_limits_millicores: f[2],
            memory_requests_bytes: f[3],
            memory_limits_bytes: f[4],
            gpus: f[5],
            storage_bytes: f[6],
        }
    }

    fn zip(self, other: Resources, f: impl Fn(i64, i64) -> i64) -> Resources {
        let (a, b) = (self.fields(), other.fields());
        Resources::from_fields(std::array::from_fn(|i| f(a[i], b[i])))
    }

    pub fn is_zero(&self) -> bool {
        self.fields().iter().all(|&v| v == 0)
    }

    /// The change in words, largest first, zero parts left out:
    /// `+3 workspaces, +6 CPU requested (+12 limit), +24Gi memory requested, +60Gi storage`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.workspaces != 0 {
            let s = if self.workspaces.abs() == 1 { "" } else { "s" };
            parts.push(format!("{} workspace{s}", signed(self.workspaces)));
        }
        for (request, limit, show, what) in [
            (
                self.cpu_requests_millicores,
                self.cpu_limits_millicores,
                cpu as fn(i64) -> String,
                "CPU",
            ),
            (
                self.memory_requests_bytes,
                self.memory_limits_bytes,
                bytes,
                "memory",
            ),
        ] {
            match (request != 0, limit != 0) {
                (true, true) => parts.push(format!(
                    "{} {what} requested ({} limit)",
                    sign(request, show),
                    sign(limit, show)
                )),
                (true, false) => parts.push(format!("{} {what} requested", sign(request, show))),
                (false, true) => parts.push(format!("{} {what} limit", sign(limit, show))),
                (false, false) => {}
            }
        }
        if self.gpus != 0 {
            let s = if self.gpus.abs() == 1 { "" } else { "s" };
            parts.push(format!("{} GPU{s}", signed(self.gpus)));
        }
        if self.storage_bytes != 0 {
            parts.push(format!("{} storage", sign(self.storage_bytes, bytes)));
        }
        if parts.is_empty() {
            "no change".into()
        } else {
            parts.join(", ")
        }
    }
}

impl Add for Resources {
    type Output = Resources;
    fn add(self, other: Resources) -> Resources {
        self.zip(other, i64::saturating_add)
    }
}

impl AddAssign for Resources {
    fn add_assign(&mut self, other: Resources) {
        *self = *self + other;
    }
}

impl Sub for Resources {
    type Output = Resources;
    fn sub(self, other: Resources) -> Resources {
        self.zip(other, i64::saturating_sub)
    }
}

impl Neg for Resources {
    type Output = Resources;
    fn neg(self) -> Resources {
        Resources::default() - self
    }
}

/// The resource change of a plan: in total, and per project (projects whose resources do
/// not change are left out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Delta {
    pub total: Resources,
    pub projects: BTreeMap<String, Resources>,
}

impl Delta {
    pub fn is_zero(&self) -> bool {
        self.total.is_zero() && self.projects.is_empty()
    }

    /// Per-project contributions summed; projects whose sum is nothing are left out. The
    /// way berth makes a `Delta` (besides the empty default), so its total is always the
    /// sum of its projects.
    pub fn sum(parts: impl IntoIterator<Item = (String, Resources)>) -> Delta {
        let mut projects: BTreeMap<String, Resources> = BTreeMap::new();
        for (project, r) in parts {
            *projects.entry(project).or_default() += r;
        }
        projects.retain(|_, r| !r.is_zero());
        Delta {
            total: projects.values().fold(Resources::default(), |a, &b| a + b),
            projects,
        }
    }
}

impl Add for Delta {
    type Output = Delta;
    fn add(self, other: Delta) -> Delta {
        Delta::sum(self.projects.into_iter().chain(other.projects))
    }
}

/// What applying `desired` over `live` changes. Live objects count when git still holds
/// them or berth manages them: a plan deletes no other object, so no other object's
/// resources go away.
pub fn between<'a>(desired: &[Value], live: impl IntoIterator<Item = &'a Value>) -> Delta {
    let wanted: BTreeSet<(&str, &str)> = desired.iter().filter_map(workspace_key).collect();
    let counts = |object: &Value| {
        workspace_key(object).is_some_and(|k| wanted.contains(&k))
            || object
                .pointer("/metadata/labels")
                .and_then(|l| l.get(MANAGED_BY))
                .and_then(Value::as_str)
                == Some("berth")
    };
    let added = desired.iter().filter_map(of_object);
    let removed = live
        .into_iter()
        .filter(|o| counts(o))
        .filter_map(of_object)
        .map(|(project, r)| (project, -r));
    Delta::sum(added.chain(removed))
}

/// Namespace and name of a StatefulSet.
fn workspace_key(object: &Value) -> Option<(&str, &str)> {
    if object.get("kind").and_then(Value::as_str) != Some("StatefulSet") {
        return None;
    }
    Some((
        object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        object.pointer("/metadata/name").and_then(Value::as_str)?,
    ))
}

/// The project (its `berth/project` label, else `namespace <ns>`) and the resources of a
/// StatefulSet; `None` for any other object.
pub fn of_object(object: &Value) -> Option<(String, Resources)> {
    let (namespace, _) = workspace_key(object)?;
    let project = object
        .pointer("/metadata/labels")
        .and_then(|l| l.get(PROJECT_LABEL))
        .and_then(Value::as_str)
        .map_or_else(|| format!("namespace {namespace}"), str::to_string);
    let replicas = object
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0);
    let pod = object
        .pointer("/spec/template/spec")
        .map(pod_resources)
        .unwrap_or_default();
    let claims: i64 = object
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.pointer("/spec/resources/requests/storage"))
        .map(|q| amount(q, 1.0))
        .fold(0, i64::saturating_add);
    let times = |v: i64| v.saturating_mul(replicas);
    Some((
        project,
        Resources {
            workspaces: 1,
            cpu_requests_millicores: times(pod.cpu_requests_millicores),
            cpu_limits_millicores: times(pod.cpu_limits_millicores),
            memory_requests_bytes: times(pod.memory_requests_bytes),
            memory_limits_bytes: times(pod.memory_limits_bytes),
            gpus: times(pod.gpus),
            storage_bytes: claims.saturating_mul(replicas.max(1)),
        },
    ))
}

/// One container's requests and limits (requests defaulted to limits). `workspaces` and
/// `storage_bytes` stay 0.
fn container_resources(container: &Value) -> Resources {
    let section = |name: &str| {
        container
            .pointer(&format!("/resources/{name}"))
            .and_then(Value::as_object)
    };
    let (requests, limits) = (section("requests"), section("limits"));
    let limit = |key: &str, scale: f64| limits.and_then(|m| m.get(key)).map(|q| amount(q, scale));
    let request = |key: &str, scale: f64| {
        requests
            .and_then(|m| m.get(key))
            .map(|q| amount(q, scale))
            .or_else(|| limit(key, scale))
            .unwrap_or(0)
    };
    // GPUs are extended resources: their request equals their limit, or is defaulted to it.
    let gpu_names: BTreeSet<&String> = [requests, limits]
        .into_iter()
        .flatten()
        .flat_map(|m| m.keys())
        .filter(|k| k.ends_with("/gpu"))
        .collect();
    Resources {
        workspaces: 0,
        cpu_requests_millicores: request("cpu", 1000.0),
        cpu_limits_millicores: limit("cpu", 1000.0).unwrap_or(0),
        memory_requests_bytes: request("memory", 1.0),
        memory_limits_bytes: limit("memory", 1.0).unwrap_or(0),
        gpus: gpu_names
            .into_iter()
            .map(|k| request(k, 1.0))
            .fold(0, i64::saturating_add),
        storage_bytes: 0,
    }
}

/// What one pod reserves, as the scheduler counts it: for each resource, the larger of
/// the app containers plus the sidecars (init containers with `restartPolicy: Always`),
/// and of every other init container's own amount plus the sidecars started before it.
fn pod_resources(spec: &Value) -> Resources {
    let list = |key: &str| {
        spec.get(key)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
    };
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for init in list("initContainers") {
        let own = container_resources(init);
        if init.get("restartPolicy").and_then(Value::as_str) == Some("Always") {
            sidecars += own;
        } else {
            init_peak = init_peak.zip(own + sidecars, i64::max);
        }
    }
    let app = list("containers")
        .iter()
        .map(container_resources)
        .fold(sidecars, |a, b| a + b);
    app.zip(init_peak, i64::max)
}

/// A quantity (string or number) in base units × `scale`, rounded; 0 if it is none.
fn amount(quantity: &Value, scale: f64) -> i64 {
    let value = match quantity {
        Value::String(s) => quantity::parse(s),
        Value::Number(n) => n.as_f64(),
        _ => None,
    };
    // `as` saturates, so an absurd quantity cannot wrap around.
    value.map_or(0, |v| (v * scale).round() as i64)
}

fn signed(n: i64) -> String {
    if n > 0 {
        format!("+{n}")
    } else {
        n.to_string()
    }
}

fn sign(n: i64, show: fn(i64) -> String) -> String {
    let body = show(n.saturating_abs());
    if n < 0 {
        format!("-{body}")
    } else {
        format!("+{body}")
    }
}

/// Millicores as cores: `6`, `0.5`, `2.01`.
pub fn cpu(millicores: i64) -> String {
    let (whole, milli) = (millicores / 1000, (millicores % 1000).abs());
    if milli == 0 {
        return whole.to_string();
    }
    let fraction = format!("{milli:03}");
    let sign = if millicores < 0 && whole == 0 {
        "-"
    } else {
        ""
    };
    format!("{sign}{whole}.{}", fraction.trim_end_matches('0'))
}

/// Bytes in the largest binary unit that keeps the number at least 1, with at most two
/// decimals: `24Gi`, `1.5Gi`, `528Mi`, `100B`.
pub fn bytes(n: i64) -> String {
    const UNITS: [(&str, u32); 6] = [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ];
    let magnitude = n.unsigned_abs();
    let sign = if n < 0 { "-" } else { "" };
    for (unit, shift) in UNITS {
        let size = 1u64 << shift;
        if magnitude >= size {
            // Hundredths of the unit, rounded: exact integer arithmetic, no float noise.
            let hundredths =
                (u128::from(magnitude) * 100 + u128::from(size) / 2) / u128::from(size);
            let (whole, cents) = (hundredths / 100, hundredths % 100);
            return if cents == 0 {
                format!("{sign}{whole}{unit}")
            } else {
                let cents = format!("{cents:02}");
                format!("{sign}{whole}.{}{unit}", cents.trim_end_matches('0'))
            };
        }
    }
    format!("{sign}{magnitude}B")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn container(requests: Value, limits: Value) -> Value {
        json!({"name": "c", "resources": {"requests": requests, "limits": limits}})
    }

    fn workspace(
        ns: &str,
        name: &str,
        project: &str,
        replicas: i64,
        containers: Vec<Value>,
        storage: Option<&str>,
    ) -> Value {
        let mut sts = json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": {MANAGED_BY: "berth", PROJECT_LABEL: project},
            },
            "spec": {"replicas": replicas, "template": {"spec": {"containers": containers}}},
        });
        if let Some(size) = storage {
            sts["spec"]["volumeClaimTemplates"] = json!([{"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": size}}}}]);
        }
        sts
    }

    #[test]
    fn a_new_workspace_adds_its_requests_limits_gpus_and_storage() {
        let ws = workspace(
            "a",
            "etl",
            "analytics",
            1,
            vec![
                container(
                    json!({"cpu": "500m", "memory": "1Gi"}),
                    json!({"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}),
                ),
                container(
                    json!({"cpu": "10m", "memory": "16Mi"}),
                    json!({"memory": "64Mi"}),
                ),
            ],
            Some("20Gi"),
        );
        let delta = between(std::slice::from_ref(&ws), &[]);
        let expected = Resources {
            workspaces: 1,
            cpu_requests_millicores: 510,
            cpu_limits_millicores: 2000,
            memory_requests_bytes: (1 << 30) + (16 << 20),
            memory_limits_bytes: (4 << 30) + (64 << 20),
            gpus: 1,
            storage_bytes: 20 << 30,
        };
        assert_eq!(delta.total, expected);
        assert_eq!(delta.projects["analytics"], expected);
        assert_eq!(
            expected.describe(),
            "+1 workspace, +0.51 CPU requested (+2 limit), +1.02Gi memory requested \
             (+4.06Gi limit), +1 GPU, +20Gi storage"
        );
        // Deleting it takes exactly as much away.
        assert_eq!(between(&[], &[ws]).total, -expected);
    }

    #[test]
    fn a_suspension_frees_cpu_memory_and_gpus_but_keeps_storage_and_the_workspace() {
        let running = workspace(
            "a",
            "w",
            "p",
            1,
            vec![container(
                json!({"cpu": "1", "memory": "2Gi"}),
                json!({"nvidia.com/gpu": 1}),
            )],
            Some("10Gi"),
        );
        let mut suspended = running.clone();
        suspended["spec"]["replicas"] = json!(0);
        let delta = between(&[suspended], &[running]);
        assert_eq!(
            delta.total,
            Resources {
                cpu_requests_millicores: -1000,
                memory_requests_bytes: -(2 << 30),
                gpus: -1,
                ..Default::default()
            }
        );
        assert_eq!(
            delta.total.describe(),
            "-1 CPU requested, -2Gi memory requested, -1 GPU"
        );
    }

    #[test]
    fn init_containers_count_at_their_peak_and_sidecars_always() {
        let mut ws = workspace(
            "a",
            "w",
            "p",
            2,
            vec![container(json!({"cpu": "1"}), json!({}))],
            None,
        );
        ws["spec"]["template"]["spec"]["initContainers"] = json!([
            {"name": "big-init", "resources": {"requests": {"cpu": "3"}}},
            {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"cpu": "250m"}}},
            {"name": "late-init", "resources": {"requests": {"cpu": "2900m"}}},
        ]);
        // max(app 1 + sidecar 0.25, big-init 3, late-init 2.9 + sidecar 0.25) = 3.15, × 2.
        assert_eq!(between(&[ws], &[]).total.cpu_requests_millicores, 6300);
    }

    #[test]
    fn unmanaged_live_workspaces_are_not_taken_away() {
        let mut foreign = workspace("a", "theirs", "p", 1, vec![], Some("1Gi"));
        foreign["metadata"]["labels"] = json!({});
        assert!(between(&[], &[foreign]).is_zero());
    }

    #[test]
    fn units_read_like_kubernetes() {
        assert_eq!(cpu(6000), "6");
        assert_eq!(cpu(500), "0.5");
        assert_eq!(cpu(2010), "2.01");
        assert_eq!(cpu(-250), "-0.25");
        assert_eq!(bytes(24 << 30), "24Gi");
        assert_eq!(bytes(3 << 29), "1.5Gi");
        assert_eq!(bytes(528 << 20), "528Mi");
        assert_eq!(bytes(100), "100B");
        assert_eq!(bytes(-(60 << 30)), "-60Gi");
        assert_eq!(Resources::default().describe(), "no change");
    }

    /// A random quantity of CPU, in one of the forms Kubernetes accepts.
    fn cpu_quantity() -> impl Strategy<Value = Value> {
        prop_oneof![
            (0u32..8000).prop_map(|m| json!(format!("{m}m"))),
            (0u32..16).prop_map(|c| json!(c.to_string())),
            (0u32..16).prop_map(|c| json!(c)),
        ]
    }

    fn memory_quantity() -> impl Strategy<Value = Value> {
        prop_oneof![
            (0u32..64).prop_map(|g| json!(format!("{g}Gi"))),
            (0u32..65536).prop_map(|m| json!(format!("{m}Mi"))),
            (0u32..64).prop_map(|g| json!(format!("{g}G"))),
        ]
    }

    fn arb_container() -> impl Strategy<Value = Value> {
        (
            proptest::option::of(cpu_quantity()),
            proptest::option::of(memory_quantity()),
            proptest::option::of(cpu_quantity()),
            proptest::option::of(memory_quantity()),
            proptest::option::of(0u32..4),
        )
            .prop_map(|(rc, rm, lc, lm, gpu)| {
                let mut requests = serde_json::Map::new();
                let mut limits = serde_json::Map::new();
                rc.map(|v| requests.insert("cpu".into(), v));
                rm.map(|v| requests.insert("memory".into(), v));
                lc.map(|v| limits.insert("cpu".into(), v));
                lm.map(|v| limits.insert("memory".into(), v));
                gpu.map(|g| limits.insert("nvidia.com/gpu".into(), json!(g)));
                container(Value::Object(requests), Value::Object(limits))
            })
    }

    /// Up to 6 workspaces named w0…w5 in two projects, each at a random size.
    fn arb_workspaces() -> impl Strategy<Value = Vec<Value>> {
        proptest::collection::vec(
            (
                proptest::bool::ANY,
                0i64..3,
                proptest::collection::vec(arb_container(), 1..3),
                proptest::option::of((1u32..100).prop_map(|g| format!("{g}Gi"))),
            ),
            0..6,
        )
        .prop_map(|list| {
            list.into_iter()
                .enumerate()
                .map(|(i, (first, replicas, containers, storage))| {
                    let project = if first { "p" } else { "q" };
                    workspace(
                        project,
                        &format!("w{i}"),
                        project,
                        replicas,
                        containers,
                        storage.as_deref(),
                    )
                })
                .collect()
        })
    }

    proptest! {
        /// A plan from A to B and the plan back from B to A change resources by opposite
        /// amounts, in total and per project.
        #[test]
        fn a_plan_and_its_inverse_sum_to_zero(a in arb_workspaces(), b in arb_workspaces()) {
            let forth = super::super::compute(&a, &b).resources;
            let back = super::super::compute(&b, &a).resources;
            let sum = forth.clone() + back;
            prop_assert!(sum.is_zero(), "{:?}", sum);
            prop_assert_eq!(
                forth.total,
                forth.projects.values().fold(Resources::default(), |x, &y| x + y)
            );
        }

        /// Adding a workspace to any repository adds exactly that workspace's resources.
        #[test]
        fn adding_a_workspace_adds_exactly_its_resources(
            others in arb_workspaces(),
            containers in proptest::collection::vec(arb_container(), 1..3),
            replicas in 0i64..3,
        ) {
            let new = workspace("p", "new", "p", replicas, containers, Some("5Gi"));
            let mut after = others.clone();
            after.push(new.clone());
            let delta = super::super::compute(&after, &others).resources;
            let (_, own) = of_object(&new).expect("a StatefulSet");
            prop_assert_eq!(delta.total, own);
            prop_assert_eq!(own.workspaces, 1);
            prop_assert_eq!(own.storage_bytes, (5i64 << 30) * replicas.max(1));
        }
    }
}

//! Planning against many live objects in little memory. A live plan reads every member of
//! the ApplySet, but nearly all of them are exactly what git wants: such a member is kept
//! as [`Live::Same`] (what the plan needs of it besides, a few bytes) instead of the whole
//! object, and its desired object stays JSON text ([`ObjectText`]), never read back. Only
//! the objects that differ, or that git no longer holds, are planned the usual way, by
//! [`super::compute_without_diffs`] on those alone, so every change, restart and note is
//! what planning over every object gives (a property test checks it).

use super::delta::{self, Delta, Resources};
use super::{Action, Change, Plan, compare};
use crate::render::{ObjectKey, ObjectText, env_config_map_name};
use rayon::prelude::*;
use serde_json::Value;
use std::borrow::{Borrow, Cow};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A live object as a live plan keeps it.
#[derive(Debug, Clone)]
pub enum Live {
    /// The object as the server has it, without its managedFields: it differs from the
    /// desired object of its key, or git holds no object of its key.
    Full(Value),
    /// As [`Live::Full`], kept as JSON text (a sixth of the memory) and read back only
    /// while its namespace is planned or its dry-run runs: a live plan where everything
    /// changed holds every member so.
    Text(ObjectText),
    /// Equal, as written, to the desired object of its key wherever that one sets a value
    /// ([`compare::same_where_set`]), so the desired object stands in for it.
    Same(Same),
}

/// What a plan needs of a live object that is what git wants.
#[derive(Debug, Clone, Default)]
pub struct Same {
    /// What the pair adds to the plan's resource delta (a StatefulSet's desired resources
    /// minus its live ones, per project), when it is not nothing: fields the server
    /// defaults, such as requests from limits, count on the live side as they are.
    pub delta: Vec<(String, Resources)>,
}

impl Live {
    /// The whole object, read back when it is text; `None` when it is [`Live::Same`].
    pub fn full(&self) -> Option<std::borrow::Cow<'_, Value>> {
        match self {
            Live::Full(object) => Some(std::borrow::Cow::Borrowed(object)),
            Live::Text(text) => Some(std::borrow::Cow::Owned(text.value())),
            Live::Same(_) => None,
        }
    }

    fn is_whole(&self) -> bool {
        !matches!(self, Live::Same(_))
    }
}

/// Keep `live` whole, or as [`Live::Same`] when `desired` (the desired object of its key)
/// can stand in for it.
pub fn classify(desired: &Value, live: Value) -> Live {
    if !compare::same_where_set(desired, &live) || !same_config_map_keys(desired, &live) {
        return Live::Full(live);
    }
    let mut parts = Vec::new();
    if let Some((project, r)) = delta::of_object(desired) {
        parts.push((project, r));
    }
    if let Some((project, r)) = delta::of_object(&live) {
        parts.push((project, -r));
    }
    let delta = Delta::sum(parts);
    Live::Same(Same {
        delta: delta.projects.into_iter().collect(),
    })
}

/// A ConfigMap's data is read key by key (a workspace's environment, by
/// [`super::compute`]'s restarts): a live key that git does not set would be read too, so
/// such a ConfigMap is kept whole.
fn same_config_map_keys(desired: &Value, live: &Value) -> bool {
    if desired.get("kind").and_then(Value::as_str) != Some("ConfigMap") {
        return true;
    }
    let keys = |o: &Value| {
        o.get("data")
            .and_then(Value::as_object)
            .map_or(0, |d| d.len())
    };
    keys(desired) == keys(live)
}

/// [`super::compute_without_diffs`] of `desired` (in apply order) against `live`, where
/// the objects that are [`Live::Same`] are not read at all: the plan is planned over the
/// others, and each of them counts as unchanged (its delta added). The desired env
/// ConfigMap of a StatefulSet that is planned is read too, with itself standing in for a
/// [`Live::Same`] live one, so a restart finds what it compares. An object with no live
/// one is a create, read only for its resources: its change carries no `desired` (the
/// object is the one of its key in `desired`), and neither does an update that applies
/// its desired object as it is (all but StatefulSets a restart keeps running or an idle
/// suspension marks). Planned namespace by namespace, as [`between_renders`] is, so only
/// one namespace's changed objects are read back at a time on each thread.
pub fn compute(desired: &[ObjectText], live: &BTreeMap<&ObjectKey, &Live>) -> Plan {
    type Side<'a> = (Vec<&'a ObjectText>, BTreeMap<&'a ObjectKey, &'a Live>);
    let mut groups: BTreeMap<Option<&str>, Side> = BTreeMap::new();
    for object in desired {
        groups
            .entry(object.key.namespace.as_deref())
            .or_default()
            .0
            .push(object);
    }
    for (key, object) in live {
        groups
            .entry(key.namespace.as_deref())
            .or_default()
            .1
            .insert(key, object);
    }
    let plans = groups
        .into_par_iter()
        .map(|(_, (desired, live))| {
            let mut plan = compute_over(&desired, &live, false);
            let by_key: BTreeMap<&ObjectKey, &ObjectText> =
                desired.iter().map(|o| (&o.key, *o)).collect();
            for change in &mut plan.changes {
                if applies_as_rendered(change, &by_key) {
                    change.desired = None;
                }
            }
            plan
        })
        .collect();
    merge(plans)
}

/// Whether `change` is an update whose object to apply is its desired one as rendered
/// (then [`compute`] leaves it to the text). Not a StatefulSet an idle suspension marks:
/// the reconciler reads that mark from the change.
fn applies_as_rendered(change: &Change, desired: &BTreeMap<&ObjectKey, &ObjectText>) -> bool {
    let (Some(object), Some(text)) = (&change.desired, desired.get(&change.object)) else {
        return false;
    };
    let idle = object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(crate::render::IDLE_SINCE))
        .is_some();
    change.action == Action::Update
        && change.problem.is_none()
        && !idle
        && (change.object.kind != "StatefulSet" || *object == text.value())
}

/// Plans of namespaces in key order as one, so restarts come in the order of their
/// StatefulSets, as when planned at once.
fn merge(plans: Vec<Plan>) -> Plan {
    let mut plan = Plan::default();
    for part in plans {
        plan.changes.extend(part.changes);
        plan.restarts.extend(part.restarts);
        plan.warnings.extend(part.warnings);
        plan.unchanged += part.unchanged;
        plan.resources = plan.resources + part.resources;
    }
    super::sort_changes(&mut plan.changes);
    plan
}

/// The plan from the render `live` to the render `desired`, both kept as JSON text: a
/// diff's base and head revisions, or an offline plan's render against nothing. An object
/// whose text is the same on both sides is [`Live::Same`] and never read back; only the
/// others are, so a plan costs about what rendering costs (BENCHMARKS.md). The plan, its
/// diffs included, is [`super::compute`]'s over the same objects. `desired` may hold the
/// live side's own texts ([`text_against`]).
pub fn between_renders(desired: &[impl Borrow<ObjectText>], live: &[ObjectText]) -> Plan {
    // Planned namespace by namespace (cluster-scoped objects as one more), on every core:
    // what is planned of an object reads only objects of its own namespace (its live
    // object, a workspace's env ConfigMap), so only one namespace's objects are read back
    // at a time on each thread, however many change.
    type Side<'a> = Vec<&'a ObjectText>;
    let mut groups: BTreeMap<Option<&str>, (Side, Side)> = BTreeMap::new();
    for object in desired {
        let object = object.borrow();
        groups
            .entry(object.key.namespace.as_deref())
            .or_default()
            .0
            .push(object);
    }
    for object in live {
        groups
            .entry(object.key.namespace.as_deref())
            .or_default()
            .1
            .push(object);
    }
    let plans: Vec<Plan> = groups
        .into_par_iter()
        .map(|(_, (desired, live))| {
            let by_key: BTreeMap<&ObjectKey, &ObjectText> =
                desired.iter().map(|o| (&o.key, *o)).collect();
            let kept: Vec<(&ObjectKey, Live)> = live
                .iter()
                .map(|l| {
                    let kept = match by_key.get(&l.key) {
                        // The same text, so the same object: nothing to plan, and no
                        // resources change.
                        Some(d) if d.json().get() == l.json().get() => Live::Same(Same::default()),
                        _ => Live::Full(l.value()),
                    };
                    (&l.key, kept)
                })
                .collect();
            let live: BTreeMap<&ObjectKey, &Live> = kept.iter().map(|(k, l)| (*k, l)).collect();
            compute_over(&desired, &live, true)
        })
        .collect();
    merge(plans)
}

/// The live objects of a render by key, for [`text_against`].
pub fn texts_by_key(live: &[ObjectText]) -> HashMap<&ObjectKey, &ObjectText> {
    live.iter().map(|o| (&o.key, o)).collect()
}

/// A desired object's text for [`between_renders`] against `live`: the live one itself when
/// the texts are the same, so an unchanged object is held once, not once per side (a diff
/// of a one-line change at 100,000 workspaces held both revisions whole).
pub fn text_against<'a>(
    live: &HashMap<&ObjectKey, &'a ObjectText>,
    key: &ObjectKey,
    object: &Value,
) -> Cow<'a, ObjectText> {
    let text = ObjectText::new(key.clone(), object);
    match live.get(key) {
        Some(same) if same.json().get() == text.json().get() => Cow::Borrowed(same),
        _ => Cow::Owned(text),
    }
}

/// [`compute`], with the diffs of updates when `diffs`.
fn compute_over(desired: &[&ObjectText], live: &BTreeMap<&ObjectKey, &Live>, diffs: bool) -> Plan {
    // Env ConfigMaps of StatefulSets that are planned against a live one: a restart may
    // read both sides.
    let env_maps: BTreeSet<ObjectKey> = desired
        .iter()
        .map(|d| &d.key)
        .filter(|k| k.kind == "StatefulSet" && live.get(k).is_some_and(|l| l.is_whole()))
        .map(|k| ObjectKey {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: k.namespace.clone(),
            name: env_config_map_name(&k.name),
        })
        .collect();
    let mut planned = Vec::new();
    let mut stand_ins = Vec::new();
    let mut creates = Vec::new();
    let mut unchanged = 0;
    let mut counted = Vec::new();
    for object in desired {
        match live.get(&object.key) {
            Some(Live::Same(s)) if !env_maps.contains(&object.key) => {
                unchanged += 1;
                counted.extend(s.delta.iter().cloned());
            }
            Some(Live::Same(s)) => {
                let value = object.value();
                stand_ins.push(value.clone());
                planned.push(value);
                counted.extend(s.delta.iter().cloned());
            }
            None if !env_maps.contains(&object.key) => {
                // Only a StatefulSet has resources: no other object is read back.
                if object.key.kind == "StatefulSet" {
                    counted.extend(delta::of_object(&object.value()));
                }
                creates.push(Change::new(
                    Action::Create,
                    object.key.clone(),
                    "new in git",
                    None,
                ));
            }
            _ => planned.push(object.value()),
        }
    }
    let whole: Vec<std::borrow::Cow<Value>> = live.values().filter_map(|l| l.full()).collect();
    let live: Vec<&Value> = whole.iter().map(|l| l.as_ref()).chain(&stand_ins).collect();
    let mut plan = super::compute_with(&planned, &live, diffs);
    plan.unchanged += unchanged;
    plan.resources = plan.resources + Delta::sum(counted);
    plan.changes.extend(creates);
    super::sort_changes(&mut plan.changes);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::SourceFile;
    use crate::render::{RenderContext, key_of};
    use proptest::prelude::*;
    use serde_json::json;

    /// Workspaces with what a plan reads specially: restart policies, an idle timeout
    /// (Lease, ServiceAccount, Role, RoleBinding), a Secret reference, a suspension, and
    /// resources (the delta); in two namespaces.
    fn rendered() -> Vec<Value> {
        let text = r#"
apiVersion: berth/v1alpha1
kind: Project
metadata: {name: p}
spec:
  namespace: ns
  image: mageai/mageai:1
  shareSecretsAcrossWorkspaces: true
  env:
    - {name: SHARED, value: "1"}
    - {name: PASSWORD, secretRef: {name: db, key: password}}
---
apiVersion: berth/v1alpha1
kind: Workspace
metadata: {name: a}
spec:
  project: p
  environment: dev
  resources: {requests: {cpu: 500m, memory: 1Gi}, limits: {cpu: "1", memory: 2Gi}}
  lifecycle: {termination: {idleSeconds: 600}}
---
apiVersion: berth/v1alpha1
kind: Workspace
metadata: {name: b}
spec:
  project: p
  environment: prod
  env: [{name: OWN, value: "x"}]
  lifecycle: {restart: manual}
---
apiVersion: berth/v1alpha1
kind: Workspace
metadata: {name: c}
spec: {project: p, environment: dev, suspended: true, storage: {size: 20Gi}}
---
apiVersion: berth/v1alpha1
kind: Project
metadata: {name: q}
spec: {namespace: other, image: mageai/mageai:1}
---
apiVersion: berth/v1alpha1
kind: Workspace
metadata: {name: d}
spec: {project: q, environment: dev, lifecycle: {restart: manual}}
"#;
        let desired = crate::desired(
            vec![SourceFile::new("repo.yaml", text)],
            &RenderContext::default(),
        );
        assert!(!desired.has_errors(), "{:?}", desired.diagnostics);
        desired.objects
    }

    /// Choices drawn from a seed, the same for the same seed.
    struct Dice(proptest::test_runner::TestRng);

    impl Dice {
        fn new(seed: u64) -> Dice {
            let bytes: Vec<u8> = std::iter::repeat_n(seed.to_le_bytes(), 4)
                .flatten()
                .collect();
            Dice(proptest::test_runner::TestRng::from_seed(
                proptest::test_runner::RngAlgorithm::ChaCha,
                &bytes,
            ))
        }

        fn below(&mut self, n: usize) -> usize {
            (self.0.next_u64() % n.max(1) as u64) as usize
        }
    }

    /// Pointers of every value in `value`.
    fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let k = k.replace('~', "~0").replace('/', "~1");
                    pointers(v, format!("{at}/{k}"), out);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    pointers(v, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
        out.push(at);
    }

    /// What the server and people do to a live object: defaults and foreign fields, edits
    /// of berth's fields (to other values, to the same amount spelled otherwise, to other
    /// types), removals, longer lists, another env hash or record, extra ConfigMap keys.
    fn mutate(object: &mut Value, dice: &mut Dice) {
        for _ in 0..dice.below(3) {
            let mut all = Vec::new();
            pointers(object, String::new(), &mut all);
            let at = all[dice.below(all.len())].clone();
            let (parent, last) = at.rsplit_once('/').unwrap_or(("", ""));
            let last = last.replace("~1", "/").replace("~0", "~");
            let replacement = match dice.below(9) {
                0 => json!("changed"),
                1 => json!(1),
                2 => json!({"server": "default"}),
                3 => json!([]),
                4 => json!({}),
                5 => Value::Null,
                6 => match object.pointer(&at) {
                    Some(Value::String(s)) if s == "1" => json!("1000m"),
                    Some(Value::String(s)) if s == "500m" => json!("0.5"),
                    Some(Value::Number(n)) => json!(n.to_string()),
                    Some(other) => other.clone(),
                    None => continue,
                },
                7 => {
                    // Removed.
                    match object.pointer_mut(parent) {
                        Some(Value::Object(map)) => {
                            map.shift_remove(&last);
                        }
                        Some(Value::Array(items)) => {
                            items.pop();
                        }
                        _ => {}
                    }
                    continue;
                }
                _ => {
                    // A field beside it (the server's default, another manager's field).
                    if let Some(Value::Object(map)) = object.pointer_mut(parent) {
                        map.insert(format!("extra{}", dice.below(2)), json!("x"));
                    } else if let Some(Value::Array(items)) = object.pointer_mut(parent) {
                        items.push(json!("extra"));
                    }
                    continue;
                }
            };
            if at.is_empty() {
                continue;
            }
            if let Some(slot) = object.pointer_mut(&at) {
                *slot = replacement;
            }
        }
    }

    /// What the cluster holds: each rendered object as it is, changed, or missing; env
    /// hashes and records of other revisions; objects git no longer holds.
    fn live_of(desired: &[Value], dice: &mut Dice) -> Vec<Value> {
        let mut live = Vec::new();
        for original in desired {
            let mut object = original.clone();
            object["metadata"]["resourceVersion"] = json!("7");
            object["status"] = json!({"replicas": 1});
            match dice.below(8) {
                0 => continue,
                1 | 2 => {
                    mutate(&mut object, dice);
                    // What names an object is the server's: never missing or changed.
                    let original = |p: &str| object_at(original, p);
                    for p in [
                        "/apiVersion",
                        "/kind",
                        "/metadata/name",
                        "/metadata/namespace",
                    ] {
                        if let Some(v) = original(p) {
                            if !object["metadata"].is_object() {
                                object["metadata"] = json!({});
                            }
                            match p {
                                "/apiVersion" => object["apiVersion"] = v,
                                "/kind" => object["kind"] = v,
                                "/metadata/name" => object["metadata"]["name"] = v,
                                _ => object["metadata"]["namespace"] = v,
                            }
                        }
                    }
                }
                3 if object["kind"] == "StatefulSet" => {
                    object["spec"]["template"]["metadata"]["annotations"]
                        [crate::render::ENV_HASH] = json!(format!("old{}", dice.below(2)));
                    match dice.below(3) {
                        0 => {
                            if let Some(a) = object["metadata"]["annotations"].as_object_mut() {
                                a.shift_remove(crate::render::ENV_RECORD);
                            }
                        }
                        1 => {
                            object["metadata"]["annotations"][crate::render::ENV_RECORD] =
                                json!(r#"{"SHARED":["project env","v:0"]}"#)
                        }
                        _ => {}
                    }
                }
                4 if object["kind"] == "ConfigMap" => {
                    object["data"]["PASSWORD"] = json!("typed by hand");
                }
                _ => {}
            }
            live.push(object);
        }
        for (i, managed) in [(0, true), (1, false)] {
            if dice.below(2) == 0 {
                live.push(json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("gone-{i}"), "namespace": "ns",
                        "labels": if managed { json!({crate::render::MANAGED_BY: "berth"}) } else { json!({}) }},
                    "data": {"a": "b"},
                }));
            }
        }
        live
    }

    fn object_at(object: &Value, pointer: &str) -> Option<Value> {
        object.pointer(pointer).cloned()
    }

    /// The same plan; a live plan's creates, and its updates that apply their desired
    /// object as rendered, carry no object of their own, so theirs is the desired object of
    /// their key.
    fn same_plan(a: &Plan, b: &Plan, texts: &[ObjectText]) -> Result<(), TestCaseError> {
        prop_assert_eq!(serde_json::to_value(a).ok(), serde_json::to_value(b).ok());
        let by_key: BTreeMap<&ObjectKey, &ObjectText> = texts.iter().map(|t| (&t.key, t)).collect();
        let desired = |p: &Plan| {
            p.changes
                .iter()
                .map(|c| match (&c.desired, c.action) {
                    (None, Action::Create | Action::Update) => {
                        by_key.get(&c.object).map(|t| t.value())
                    }
                    (d, _) => d.clone(),
                })
                .collect::<Vec<_>>()
        };
        prop_assert_eq!(desired(a), desired(b));
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Standing desired objects in for live ones that are [`Live::Same`], keeping the
        /// others as text ([`Live::Text`]) or whole, and planning namespace by namespace,
        /// plans exactly what planning over every whole live object at once plans: the
        /// same changes (with their fields, reasons, notes, problems and objects to
        /// apply), restarts, unchanged count and resource delta.
        #[test]
        fn compact_live_objects_plan_what_whole_ones_plan(seed in any::<u64>()) {
            let desired = rendered();
            let mut dice = Dice::new(seed);
            let live = live_of(&desired, &mut dice);
            let expected = super::super::compute_without_diffs(&desired, &live);
            let by_key: BTreeMap<ObjectKey, &Value> =
                desired.iter().filter_map(|d| Some((key_of(d)?, d))).collect();
            let classified: BTreeMap<ObjectKey, Live> = live
                .iter()
                .filter_map(|l| {
                    let key = key_of(l)?;
                    let kept = match by_key.get(&key) {
                        Some(d) => classify(d, l.clone()),
                        None => Live::Full(l.clone()),
                    };
                    // As a live plan keeps them (text), or whole.
                    let kept = match kept {
                        Live::Full(v) if dice.below(2) == 0 => {
                            Live::Text(ObjectText::new(key.clone(), &v))
                        }
                        other => other,
                    };
                    Some((key, kept))
                })
                .collect();
            let texts: Vec<ObjectText> = desired
                .iter()
                .filter_map(|d| Some(ObjectText::new(key_of(d)?, d)))
                .collect();
            let refs: BTreeMap<&ObjectKey, &Live> = classified.iter().collect();
            same_plan(&compute(&texts, &refs), &expected, &texts)?;
        }

        /// A plan between two renders kept as text is [`super::super::compute`]'s over the
        /// objects, diffs included: objects of the same text on both sides (about half of
        /// them here), changed ones, new ones and ones the base holds alone.
        #[test]
        fn a_plan_between_renders_is_the_plan_over_their_objects(seed in any::<u64>()) {
            let desired = rendered();
            let mut dice = Dice::new(seed);
            let mut base = live_of(&desired, &mut dice);
            let by_key: BTreeMap<ObjectKey, &Value> =
                desired.iter().filter_map(|d| Some((key_of(d)?, d))).collect();
            let mut same = 0;
            for object in &mut base {
                if let Some(d) = key_of(object).and_then(|k| by_key.get(&k).copied())
                    && dice.below(2) == 0
                {
                    *object = d.clone();
                    same += 1;
                }
            }
            let expected = super::super::compute(&desired, &base);
            let text = |objects: &[Value]| -> Vec<ObjectText> {
                objects
                    .iter()
                    .filter_map(|o| Some(ObjectText::new(key_of(o)?, o)))
                    .collect()
            };
            let texts = text(&desired);
            let base = text(&base);
            let plan = between_renders(&texts, &base);
            prop_assert!(plan.unchanged >= same);
            same_plan(&plan, &expected, &texts)?;
            // The same plan when the unchanged objects are the base's own texts.
            let by_key = texts_by_key(&base);
            let shared: Vec<Cow<ObjectText>> = desired
                .iter()
                .filter_map(|d| Some(text_against(&by_key, &key_of(d)?, d)))
                .collect();
            let borrowed = shared.iter().filter(|t| matches!(t, Cow::Borrowed(_))).count();
            prop_assert!(borrowed >= same);
            same_plan(&between_renders(&shared, &base), &expected, &texts)?;
        }

        /// Whatever [`compare::same_where_set`] calls the same, the full compare calls
        /// unchanged.
        #[test]
        fn same_where_set_is_never_a_change(seed in any::<u64>()) {
            let desired = rendered();
            let mut dice = Dice::new(seed);
            for object in &desired {
                let mut live = object.clone();
                mutate(&mut live, &mut dice);
                if compare::same_where_set(object, &live) {
                    prop_assert!(compare::changed_fields(object, &live).is_empty());
                }
            }
        }
    }

    /// Objects as they are rendered are all kept compact, and a workspace's edited field
    /// keeps that object whole.
    #[test]
    fn unchanged_objects_are_kept_compact() {
        let desired = rendered();
        for object in &desired {
            let mut live = object.clone();
            live["status"] = json!({"x": 1});
            assert!(matches!(classify(object, live), Live::Same(_)), "{object}");
        }
        let sts = desired
            .iter()
            .find(|o| o["kind"] == "StatefulSet")
            .expect("a StatefulSet");
        let mut live = sts.clone();
        live["spec"]["replicas"] = json!(3);
        assert!(matches!(classify(sts, live), Live::Full(_)));
    }

    /// The text form of a desired object reads back as the same object, key order and
    /// numbers included.
    #[test]
    fn object_text_reads_back_the_same_object() {
        for object in rendered() {
            let text = ObjectText::new(key_of(&object).expect("a key"), &object);
            assert_eq!(text.value(), object);
            assert_eq!(
                serde_json::to_string(&text.value()).ok(),
                serde_json::to_string(&object).ok()
            );
        }
    }
}

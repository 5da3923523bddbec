//! The full control plane's volume provisioner: the part of a storage driver that no
//! Kubernetes controller plays (`scripts/envtest shell` runs the same logic as a shell loop).
//!
//! The StorageClass `standard` of `cluster.yaml` names the external provisioner
//! [`PROVISIONER`]. kube-controller-manager's PersistentVolume controller hands every claim
//! of that class to it (annotation `volume.kubernetes.io/storage-provisioner`) and waits; an
//! external provisioner (external-provisioner + a CSI driver, in a real cluster) then creates
//! a PersistentVolume bound to the claim, and the controller binds both. This does that part
//! and nothing more:
//!
//! * **provision**: a claim handed to us gets a PersistentVolume `pvc-<claim uid>` of the
//!   requested size, with a `claimRef` to the claim; the PersistentVolume controller binds
//!   them (it writes both statuses, as in a real cluster);
//! * **delete**: a PersistentVolume of ours that is `Released` (its claim is gone, e.g. with
//!   its namespace) and whose reclaim policy is `Delete` is deleted;
//! * **resize** (the external resizer's part): when a bound claim asks for more than it has
//!   and kube-controller-manager's expand controller has left it to "an external
//!   controller" (Event `ExternalExpanding`), the volume's capacity is raised and the
//!   claim's `status.capacity` (and `status.allocatedResources`) set to the new size.
//!   Without this a resize stays pending forever. These status writes are the external
//!   resizer's, not those of any controller that runs here.
//!
//! The volumes are `hostPath` volumes that are never mounted: kwok runs no containers.
//! It polls (a LIST of claims and one of volumes every 200 ms) on a thread of its own,
//! for the life of the test binary.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// The provisioner name of the StorageClass in `cluster.yaml`.
pub const PROVISIONER: &str = "berth.test/envtest";
/// The field manager of every write.
const MANAGER: &str = "berth-envtest-provisioner";
const CLAIM_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// Starts the provisioner thread.
pub(crate) fn spawn(kubeconfig: PathBuf) {
    let spawned = std::thread::Builder::new()
        .name("envtest-provisioner".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    super::say(&format!("envtest: provisioner: no tokio runtime: {e}"));
                    return;
                }
            };
            runtime.block_on(run(kubeconfig));
        });
    if let Err(e) = spawned {
        super::say(&format!(
            "envtest: provisioner: cannot start its thread: {e}"
        ));
    }
}

async fn run(kubeconfig: PathBuf) {
    let client = loop {
        match super::client_from(&kubeconfig, super::ADMIN_CONTEXT).await {
            Ok(client) => break client,
            Err(e) if !super::exiting() => {
                super::say(&format!("envtest: provisioner: no client yet: {e:#}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(_) => return,
        }
    };
    let mut last_error = String::new();
    while !super::exiting() {
        match pass(&client).await {
            Ok(()) => last_error.clear(),
            Err(e) => {
                // Say each new error once (the API server is gone at exit; that is fine).
                let e = format!("{e:#}");
                if e != last_error && !super::exiting() {
                    super::say(&format!("envtest: provisioner: {e}"));
                }
                last_error = e;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One look at every claim and volume.
async fn pass(client: &Client) -> anyhow::Result<()> {
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claims = claims.list(&ListParams::default()).await?.items;
    let volumes: BTreeMap<String, PersistentVolume> = volumes
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|v| (v.metadata.name.clone().unwrap_or_default(), v))
        .collect();
    for claim in &claims {
        let ours = claim
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CLAIM_PROVISIONER))
            .is_some_and(|p| p == PROVISIONER);
        if !ours || claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let spec = claim.spec.clone().unwrap_or_default();
        match spec.volume_name.as_deref() {
            None | Some("") => provision(client, claim, &volumes).await?,
            Some(volume) => {
                if let Some(volume) = volumes.get(volume) {
                    resize(client, claim, volume).await?;
                }
            }
        }
    }
    for (name, volume) in &volumes {
        let ours = volume
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PROVISIONED_BY))
            .is_some_and(|p| p == PROVISIONER);
        let released = volume.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
        let delete = volume
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
            == Some("Delete");
        if ours && released && delete && volume.metadata.deletion_timestamp.is_none() {
            let api: Api<PersistentVolume> = Api::all(client.clone());
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

async fn provision(
    client: &Client,
    claim: &PersistentVolumeClaim,
    volumes: &BTreeMap<String, PersistentVolume>,
) -> anyhow::Result<()> {
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    let name = format!("pvc-{uid}");
    if uid.is_empty() || volumes.contains_key(&name) {
        return Ok(());
    }
    let spec = claim.spec.clone().unwrap_or_default();
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_else(|| "1Gi".into());
    let volume = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
            "storageClassName": spec.storage_class_name.clone().unwrap_or_default(),
            "persistentVolumeReclaimPolicy": "Delete",
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": claim.metadata.namespace,
                "name": claim.metadata.name,
                "uid": uid,
            },
            "hostPath": {"path": format!("/var/lib/berth-envtest/volumes/{name}")},
        },
    });
    let volume: PersistentVolume = serde_json::from_value(volume)?;
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let params = PostParams {
        field_manager: Some(MANAGER.into()),
        ..PostParams::default()
    };
    match api.create(&params, &volume).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn resize(
    client: &Client,
    claim: &PersistentVolumeClaim,
    volume: &PersistentVolume,
) -> anyhow::Result<()> {
    let Some(requested) = claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
    else {
        return Ok(());
    };
    let has = volume
        .spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"));
    let claim_has = claim
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"));
    // Only a bound claim (its status has a capacity) that asks for more than it has.
    let (Some(has), Some(claim_has)) = (has, claim_has) else {
        return Ok(());
    };
    let wanted = bytes(requested);
    if wanted <= bytes(claim_has) {
        return Ok(());
    }
    // An external resizer acts once the expand controller has handed the claim over (for a
    // volume without an in-tree resize plugin it says so with an Event).
    let namespace = claim.metadata.namespace.as_deref().unwrap_or_default();
    let uid = claim.metadata.uid.as_deref().unwrap_or_default();
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let handed_over = events
        .list(&ListParams::default().fields(&format!(
            "involvedObject.uid={uid},reason=ExternalExpanding"
        )))
        .await?;
    if handed_over.items.is_empty() {
        return Ok(());
    }
    let params = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..PatchParams::default()
    };
    if wanted > bytes(has) {
        let api: Api<PersistentVolume> = Api::all(client.clone());
        let name = volume.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &params,
            &Patch::Merge(json!({"spec": {"capacity": {"storage": requested}}})),
        )
        .await?;
    }
    let api: Api<PersistentVolumeClaim> = Api::namespaced(
        client.clone(),
        claim.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let name = claim.metadata.name.clone().unwrap_or_default();
    api.patch_status(
        &name,
        &params,
        &Patch::Merge(json!({"status": {
            "capacity": {"storage": requested},
            "allocatedResources": {"storage": requested},
        }})),
    )
    .await?;
    Ok(())
}

/// A storage quantity in bytes (`20Gi`, `50G`, `1.5Ti`, `1e9`, `500Mi`); 0 if unreadable.
pub fn bytes(quantity: &Quantity) -> f64 {
    berth::quantity::parse(&quantity.0).unwrap_or(0.0)
}

//! Images: references, a content-addressed store, a registry client, layer unpacking and
//! archive import.

pub mod archive;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;

pub use reference::Reference;
pub use registry::Puller;
pub use store::{ImageConfig, ImageRecord, ImageStore};

/// kubelet's imagePullPolicy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// kubelet's default: Always for `:latest` or no tag, IfNotPresent otherwise.
    pub fn from_k8s(policy: Option<&str>, image: &str) -> PullPolicy {
        match policy {
            Some("Always") => PullPolicy::Always,
            Some("Never") => PullPolicy::Never,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            _ => match Reference::parse(image) {
                Ok(r) if r.digest.is_none() && r.tag.as_deref() == Some("latest") => {
                    PullPolicy::Always
                }
                _ => PullPolicy::IfNotPresent,
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    #[error(transparent)]
    Reference(#[from] reference::ReferenceError),
    #[error(transparent)]
    Pull(#[from] registry::PullError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("image {0} is not present and imagePullPolicy is Never")]
    NeverPull(String),
}

/// What [`ensure_image_reporting`] did for a container's image.
#[derive(Debug, Clone)]
pub struct Ensured {
    pub record: ImageRecord,
    /// Fetched from the registry now (false: already in the store and the policy kept it).
    pub pulled: bool,
}

/// Resolve an image for a container following its pull policy, saying whether it was pulled
/// (kubelet words its `Pulled` event after that: "Successfully pulled" or "already present").
pub fn ensure_image_reporting(
    store: &ImageStore,
    puller: &Puller,
    image: &str,
    policy: PullPolicy,
) -> Result<Ensured, EnsureError> {
    let r = Reference::parse(image)?;
    let present = store.resolve(&r.to_string()).ok();
    match (policy, present) {
        (PullPolicy::Never, Some(p)) | (PullPolicy::IfNotPresent, Some(p)) => {
            store.layer_dirs(&p)?;
            Ok(Ensured {
                record: p,
                pulled: false,
            })
        }
        (PullPolicy::Never, None) => Err(EnsureError::NeverPull(r.to_string())),
        _ => Ok(Ensured {
            record: puller.pull(store, &r)?,
            pulled: true,
        }),
    }
}

/// Resolve an image for a container following its pull policy.
pub fn ensure_image(
    store: &ImageStore,
    puller: &Puller,
    image: &str,
    policy: PullPolicy,
) -> Result<ImageRecord, EnsureError> {
    ensure_image_reporting(store, puller, image, policy).map(|e| e.record)
}

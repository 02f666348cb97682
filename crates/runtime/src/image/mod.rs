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

/// Resolve an image for a container following its pull policy.
pub fn ensure_image(
    store: &ImageStore,
    puller: &Puller,
    image: &str,
    policy: PullPolicy,
) -> Result<ImageRecord, EnsureError> {
    let r = Reference::parse(image)?;
    let present = store.resolve(&r.to_string()).ok();
    match (policy, present) {
        (PullPolicy::Never, Some(p)) | (PullPolicy::IfNotPresent, Some(p)) => {
            store.layer_dirs(&p)?;
            Ok(p)
        }
        (PullPolicy::Never, None) => Err(EnsureError::NeverPull(r.to_string())),
        _ => Ok(puller.pull(store, &r)?),
    }
}

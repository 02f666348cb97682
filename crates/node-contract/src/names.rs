//! The one parser of stage1 names and of network-mode names.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// rkt stage1 images rktup knows, as rkt named them (`coreos.com/rkt/stage1-*`); the order is
/// [`Stage1::ALL`]'s.
pub const STAGE1_NAMES: [&str; 3] = [
    "coreos.com/rkt/stage1-coreos",
    "coreos.com/rkt/stage1-fly",
    "coreos.com/rkt/stage1-kvm",
];

/// The node-wide stage1 isolation flavour (`KUBE_RKT_STAGE1_IMAGE`, `--rkt-stage1-image`, the
/// pod annotation `rkt.alpha.kubernetes.io/stage1-name-override`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage1 {
    #[default]
    Coreos,
    Fly,
    Kvm,
}

impl Stage1 {
    pub const ALL: [Stage1; 3] = [Stage1::Coreos, Stage1::Fly, Stage1::Kvm];

    /// Accepts `coreos.com/rkt/stage1-X` and `coreos/rkt/stage1-X` (X: coreos, fly, kvm), with
    /// an optional `:version` label and surrounding whitespace. Anything else is `None`.
    pub fn parse(name: &str) -> Option<Stage1> {
        let n = name.trim();
        let flavour = n
            .strip_prefix("coreos.com/rkt/stage1-")
            .or_else(|| n.strip_prefix("coreos/rkt/stage1-"))?;
        // rkt image names may carry a version label (`...:1.9.1`); the flavour decides.
        let flavour = flavour.split(':').next().unwrap_or(flavour);
        match flavour {
            "coreos" => Some(Stage1::Coreos),
            "fly" => Some(Stage1::Fly),
            "kvm" => Some(Stage1::Kvm),
            _ => None,
        }
    }

    /// The canonical image name, `coreos.com/rkt/stage1-<flavour>`.
    pub fn image_name(self) -> &'static str {
        match self {
            Stage1::Coreos => STAGE1_NAMES[0],
            Stage1::Fly => STAGE1_NAMES[1],
            Stage1::Kvm => STAGE1_NAMES[2],
        }
    }

    /// What a settings check says would be valid.
    pub fn expected() -> String {
        format!(
            "one of {} (or the same with coreos/rkt/stage1-*)",
            STAGE1_NAMES.join(", ")
        )
    }
}

impl fmt::Display for Stage1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.image_name())
    }
}

/// `--rkt-stage1-image`'s complaint about a name [`Stage1::parse`] refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStage1(pub String);

impl fmt::Display for UnknownStage1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown --rkt-stage1-image {:?} (known: coreos.com/rkt/stage1-coreos, stage1-fly, stage1-kvm)",
            self.0
        )
    }
}

impl std::error::Error for UnknownStage1 {}

impl FromStr for Stage1 {
    type Err = UnknownStage1;
    fn from_str(s: &str) -> Result<Stage1, UnknownStage1> {
        Stage1::parse(s).ok_or_else(|| UnknownStage1(s.to_string()))
    }
}

/// The pod network (`NETWORK_PROVIDER`, kubelet's `--network-plugin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// kubelet's `--network-plugin=kubenet`.
    Kubenet,
    /// kubelet's `--network-plugin=cni`.
    Cni,
    /// rkt's contained network (configured in /etc/rkt/net.d): `--network-plugin` empty.
    #[default]
    Contained,
}

impl NetworkMode {
    pub const ALL: [NetworkMode; 3] = [
        NetworkMode::Kubenet,
        NetworkMode::Cni,
        NetworkMode::Contained,
    ];

    /// Accepts `kubenet`, `cni`, and for the contained network `contained`, `rkt` or the empty
    /// string (ASCII case ignored). Anything else is `None`.
    pub fn parse(s: &str) -> Option<NetworkMode> {
        match s.to_ascii_lowercase().as_str() {
            "" | "rkt" | "contained" => Some(NetworkMode::Contained),
            "cni" => Some(NetworkMode::Cni),
            "kubenet" => Some(NetworkMode::Kubenet),
            _ => None,
        }
    }

    /// The setting's canonical value: `kubenet`, `cni` or `contained`.
    pub fn name(self) -> &'static str {
        match self {
            NetworkMode::Kubenet => "kubenet",
            NetworkMode::Cni => "cni",
            NetworkMode::Contained => "contained",
        }
    }

    /// kubelet's `--network-plugin` value (empty selects rkt's contained network).
    pub fn kubelet_plugin(self) -> &'static str {
        match self {
            NetworkMode::Kubenet => "kubenet",
            NetworkMode::Cni => "cni",
            NetworkMode::Contained => "",
        }
    }

    /// What a settings check says would be valid.
    pub fn expected() -> String {
        "one of kubenet, cni, contained, \"\"".to_string()
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Compares with a `--network-plugin` value (`""`, `cni`, `kubenet`).
impl PartialEq<&str> for NetworkMode {
    fn eq(&self, other: &&str) -> bool {
        NetworkMode::parse(other) == Some(*self)
    }
}

/// `--network-plugin`'s complaint about a name [`NetworkMode::parse`] refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownNetworkMode(pub String);

impl fmt::Display for UnknownNetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown --network-plugin {:?} (expected \"\", cni or kubenet)",
            self.0
        )
    }
}

impl std::error::Error for UnknownNetworkMode {}

impl FromStr for NetworkMode {
    type Err = UnknownNetworkMode;
    fn from_str(s: &str) -> Result<NetworkMode, UnknownNetworkMode> {
        NetworkMode::parse(s).ok_or_else(|| UnknownNetworkMode(s.to_string()))
    }
}

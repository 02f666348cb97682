//! Which cloud (or this machine) a cluster lives on.

use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Google Compute Engine.
    Gce,
    /// Amazon EC2.
    Aws,
    /// This machine: network namespaces and the embedded control plane.
    Local,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Gce, Provider::Aws, Provider::Local];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Gce => "gce",
            Provider::Aws => "aws",
            Provider::Local => "local",
        }
    }

    pub(crate) fn bit(self) -> u8 {
        match self {
            Provider::Gce => 1,
            Provider::Aws => 2,
            Provider::Local => 4,
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of providers a setting (or one of its names or defaults) applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope(u8);

impl Scope {
    pub const GCE: Scope = Scope(1);
    pub const AWS: Scope = Scope(2);
    pub const LOCAL: Scope = Scope(4);
    pub const CLOUD: Scope = Scope(1 | 2);
    pub const ALL: Scope = Scope(1 | 2 | 4);

    pub fn contains(self, provider: Provider) -> bool {
        self.0 & provider.bit() != 0
    }
}

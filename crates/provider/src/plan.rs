//! A plan: the resources `up` creates, in dependency order, grouped in steps whose members do
//! not depend on each other and so run in parallel. Providers make it from the graph `up` runs
//! ([`crate::engine::Graph::plan`]).

use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PlannedResource {
    /// The cloud's name for the kind of resource (`instance`, `firewall`, `vpc`, ...).
    pub kind: &'static str,
    pub name: String,
    /// Why or how, when it is not obvious (`exists: VPC_ID`, `size 3`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The plan's numbers of the resources this one waits for (it starts when they are done).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<usize>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PlanStep {
    pub resources: Vec<PlannedResource>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<PlanStep>,
}

impl Plan {
    /// Adds a step of independent resources.
    pub fn step(mut self, resources: Vec<PlannedResource>) -> Self {
        if !resources.is_empty() {
            self.steps.push(PlanStep { resources });
        }
        self
    }

    pub fn resources(&self) -> impl Iterator<Item = &PlannedResource> {
        self.steps.iter().flat_map(|s| &s.resources)
    }
}

pub fn resource(kind: &'static str, name: impl Into<String>) -> PlannedResource {
    PlannedResource {
        kind,
        name: name.into(),
        detail: None,
        needs: Vec::new(),
    }
}

impl PlannedResource {
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut n = 0;
        for (i, step) in self.steps.iter().enumerate() {
            let parallel = if step.resources.len() > 1 {
                " (in parallel)"
            } else {
                ""
            };
            writeln!(f, "step {}{parallel}:", i + 1)?;
            for r in &step.resources {
                n += 1;
                write!(f, "  {n:>2}. {:<22} {}", r.kind, r.name)?;
                if let Some(d) = &r.detail {
                    write!(f, "  ({d})")?;
                }
                if !r.needs.is_empty() {
                    let needs: Vec<String> = r.needs.iter().map(usize::to_string).collect();
                    write!(f, "  [after {}]", needs.join(", "))?;
                }
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

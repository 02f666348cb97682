//! The one `up` engine every provider runs: the cluster's resources as the nodes of a
//! dependency graph.
//!
//! A node is a resource (its kind, name and what it will be, as `--dry-run` prints it), the
//! nodes it needs, and an action. The action reads the typed outputs of the nodes it needs
//! (a VPC id, an address, the rendered user-data, ...) through [`Inputs`] with the [`Key`]
//! `add` returned for them, and returns its own output plus a few words for its progress
//! line. `run` starts every node as soon as the nodes it needs are done, so independent
//! resources are created at the same time (on the provider's tokio runtime), and prints one
//! progress line per node in one format for every provider (` ✓ kind name (detail, 0.42s)`).
//! `plan` is made from the same nodes: what `up --dry-run` prints is what `up` runs, step by
//! step, where a node's step is one more than the latest step of the nodes it needs.
//!
//! When a node fails, no further node starts, the ones already running finish (nothing is
//! left half-made by a cancelled call), and `run` returns the first failure with the node's
//! kind and name and the cloud's own error ([`CloudError`]: its code and message).

use crate::plan::{Plan, PlanStep, PlannedResource};
use crate::progress::Progress;
use futures::future::LocalBoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::rc::Rc;

/// A cloud API's own error: what rktup was doing, the API's error code (an EC2 code such as
/// `DependencyViolation`, a GCE reason such as `QUOTA_EXCEEDED`), the HTTP status where there
/// is one, and the API's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudError {
    /// What failed, as "failed to <action>" reads (empty: the message says it all).
    pub action: String,
    pub code: Option<String>,
    pub status: Option<u16>,
    pub message: String,
}

impl CloudError {
    /// An error with no API code (a local failure, or a check of rktup's own).
    pub fn new(message: impl Into<String>) -> CloudError {
        CloudError {
            action: String::new(),
            code: None,
            status: None,
            message: message.into(),
        }
    }

    /// "failed to `action`: `message`".
    pub fn action(action: impl Into<String>, message: impl Into<String>) -> CloudError {
        CloudError {
            action: action.into(),
            ..CloudError::new(message)
        }
    }

    pub fn with_code(mut self, code: impl Into<String>) -> CloudError {
        let code = code.into();
        self.code = (!code.is_empty()).then_some(code);
        self
    }

    pub fn with_status(mut self, status: u16) -> CloudError {
        self.status = Some(status);
        self
    }

    /// Whether the API answered with this error code.
    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

impl fmt::Display for CloudError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.action.is_empty() {
            write!(f, "failed to {}: ", self.action)?;
        }
        let head = match (self.status, &self.code) {
            (Some(s), Some(c)) => format!("HTTP {s} {c}"),
            (Some(s), None) => format!("HTTP {s}"),
            (None, Some(c)) => c.clone(),
            (None, None) => String::new(),
        };
        match (head.is_empty(), self.message.is_empty()) {
            (false, false) => write!(f, "{head}: {}", self.message),
            (false, true) => f.write_str(&head),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for CloudError {}

/// Why `up` stopped.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// A node's action failed.
    #[error("{kind} {name}: {source}")]
    Node {
        kind: &'static str,
        name: String,
        #[source]
        source: CloudError,
    },
    /// A failure outside the graph (credentials, templates, the wait for the API server).
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// `run` was asked to stop after this step (tests: an interrupted `up`).
    #[error("stopped after step {0} (of {1})")]
    Stopped(usize, usize),
}

impl UpError {
    /// The cloud's error, wherever it happened.
    pub fn cloud(&self) -> Option<&CloudError> {
        match self {
            UpError::Node { source, .. } => Some(source),
            UpError::Cloud(e) => Some(e),
            UpError::Stopped(..) => None,
        }
    }
}

/// What an action made: its output (what the nodes that need it read) and the few words of
/// its progress line (`created`, `exists`, an id).
pub struct Done<T> {
    pub value: T,
    pub detail: String,
}

impl<T: fmt::Display> Done<T> {
    /// The output is also what the progress line shows (an id, an address).
    pub fn shown(value: T) -> Done<T> {
        let detail = value.to_string();
        Done { value, detail }
    }
}

impl<T> Done<T> {
    pub fn new(value: T, detail: impl Into<String>) -> Done<T> {
        Done {
            value,
            detail: detail.into(),
        }
    }
}

/// The typed handle of a node's output.
pub struct Key<T> {
    id: usize,
    _output: PhantomData<fn() -> T>,
}

impl<T> Clone for Key<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Key<T> {}

/// A node another node needs, whatever its output type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dep(usize);

impl<T> From<Key<T>> for Dep {
    fn from(k: Key<T>) -> Dep {
        Dep(k.id)
    }
}

type Output = Rc<dyn Any>;
type Action<'a, C> =
    Box<dyn FnOnce(&'a C, Inputs) -> LocalBoxFuture<'a, Result<(Output, String), CloudError>> + 'a>;

/// The outputs of the nodes a node needs, and only those.
pub struct Inputs {
    node: String,
    outputs: Vec<(usize, Output)>,
}

impl Inputs {
    /// The output of `key`'s node, which this node must need.
    ///
    /// # Panics
    /// When this node does not need `key`'s node: a mistake in the graph, not in the cloud.
    pub fn get<T: 'static>(&self, key: Key<T>) -> &T {
        self.outputs
            .iter()
            .find(|(id, _)| *id == key.id)
            .and_then(|(_, v)| v.downcast_ref::<T>())
            .unwrap_or_else(|| {
                panic!(
                    "graph: {} reads node #{} without needing it",
                    self.node,
                    key.id + 1
                )
            })
    }
}

/// The outputs of the nodes that ran.
pub struct Outputs {
    outputs: Vec<Option<Output>>,
}

impl Outputs {
    /// `key`'s output, if its node ran and succeeded.
    pub fn get<T: 'static>(&self, key: Key<T>) -> Option<&T> {
        self.outputs.get(key.id)?.as_ref()?.downcast_ref::<T>()
    }
}

/// What `run` did: the outputs of the nodes that succeeded (also after a failure, so a
/// provider can record what exists) and how it ended.
pub struct Ran {
    pub outputs: Outputs,
    pub result: Result<(), UpError>,
}

struct Node<'a, C> {
    resource: PlannedResource,
    deps: Vec<usize>,
    step: usize,
    action: Option<Action<'a, C>>,
}

impl<C> Node<'_, C> {
    fn label(&self) -> String {
        format!("{:<22} {}", self.resource.kind, self.resource.name)
    }
}

/// The resources of one `up`, as a graph. `C` is what actions run against (the provider's
/// clients); building the graph needs none, so `--dry-run` builds it without any.
pub struct Graph<'a, C> {
    nodes: Vec<Node<'a, C>>,
}

impl<C> Default for Graph<'_, C> {
    fn default() -> Self {
        Graph { nodes: Vec::new() }
    }
}

impl<'a, C> Graph<'a, C> {
    pub fn new() -> Self {
        Graph::default()
    }

    /// Adds a node for `resource` that runs `action` once every node of `deps` is done.
    /// Dependencies are nodes added before, so the graph has no cycle.
    pub fn add<T, F>(&mut self, resource: PlannedResource, deps: &[Dep], action: F) -> Key<T>
    where
        T: 'static,
        F: FnOnce(&'a C, Inputs) -> LocalBoxFuture<'a, Result<Done<T>, CloudError>> + 'a,
    {
        let deps: Vec<usize> = deps.iter().map(|d| d.0).collect();
        let step = 1 + deps.iter().map(|d| self.nodes[*d].step).max().unwrap_or(0);
        let id = self.nodes.len();
        let action: Action<'a, C> = Box::new(move |ctx: &'a C, inputs: Inputs| {
            let fut = action(ctx, inputs);
            Box::pin(async move {
                let done = fut.await?;
                Ok((Rc::new(done.value) as Output, done.detail))
            })
        });
        self.nodes.push(Node {
            resource,
            deps,
            step,
            action: Some(action),
        });
        Key {
            id,
            _output: PhantomData,
        }
    }

    /// The number of steps: the longest chain of nodes.
    pub fn steps(&self) -> usize {
        self.nodes.iter().map(|n| n.step).max().unwrap_or(0)
    }

    /// What `up --dry-run` prints: every node by step, with the steps of what it needs.
    pub fn plan(&self) -> Plan {
        let number = self.numbering();
        let mut plan = Plan::default();
        for step in 1..=self.steps() {
            let resources = self
                .order()
                .into_iter()
                .filter(|i| self.nodes[*i].step == step)
                .map(|i| {
                    let n = &self.nodes[i];
                    let mut r = n.resource.clone();
                    r.needs = n.deps.iter().map(|d| number[*d]).collect();
                    r.needs.sort_unstable();
                    r.needs.dedup();
                    r
                })
                .collect();
            plan.steps.push(PlanStep { resources });
        }
        plan
    }

    /// Node ids step by step (in the order they were added within a step).
    fn order(&self) -> Vec<usize> {
        let mut ids: Vec<usize> = (0..self.nodes.len()).collect();
        ids.sort_by_key(|i| self.nodes[*i].step);
        ids
    }

    /// The 1-based number each node has in the printed plan.
    fn numbering(&self) -> Vec<usize> {
        let mut number = vec![0; self.nodes.len()];
        for (n, i) in self.order().into_iter().enumerate() {
            number[i] = n + 1;
        }
        number
    }

    /// Runs every node (of steps 1..=`through`, all without it), each as soon as the nodes
    /// it needs are done, with one progress line each.
    pub async fn run(mut self, ctx: &'a C, progress: &Progress, through: Option<usize>) -> Ran {
        let total = self.steps();
        let within = |n: &Node<'a, C>| through.is_none_or(|t| n.step <= t);
        let mut outputs: Vec<Option<Output>> = vec![None; self.nodes.len()];
        let mut running = FuturesUnordered::new();
        let mut failure: Option<UpError> = None;
        loop {
            if failure.is_none() {
                for i in 0..self.nodes.len() {
                    let node = &self.nodes[i];
                    let ready = node.action.is_some()
                        && within(node)
                        && node.deps.iter().all(|d| outputs[*d].is_some());
                    if !ready {
                        continue;
                    }
                    let inputs = Inputs {
                        node: node.label(),
                        outputs: node
                            .deps
                            .iter()
                            .filter_map(|d| Some((*d, outputs[*d].clone()?)))
                            .collect(),
                    };
                    let line = progress.start(node.label());
                    let action = self.nodes[i].action.take().expect("checked above");
                    let fut = action(ctx, inputs);
                    running.push(async move {
                        let started = std::time::Instant::now();
                        let r = fut.await;
                        let took = format!("{:.2}s", started.elapsed().as_secs_f64());
                        match &r {
                            Ok((_, d)) if d.is_empty() => line.end(&Ok::<(), &str>(()), &took),
                            Ok((_, d)) => line.end(&Ok::<(), &str>(()), &format!("{d}, {took}")),
                            Err(e) => line.end(&Err::<(), _>(e), ""),
                        }
                        (i, r)
                    });
                }
            }
            let Some((i, r)) = running.next().await else {
                break;
            };
            match r {
                Ok((out, _)) => outputs[i] = Some(out),
                Err(source) => {
                    if failure.is_none() {
                        let n = &self.nodes[i];
                        failure = Some(UpError::Node {
                            kind: n.resource.kind,
                            name: n.resource.name.clone(),
                            source,
                        });
                    }
                }
            }
        }
        let result = match (failure, through) {
            (Some(e), _) => Err(e),
            (None, Some(t)) if t < total => Err(UpError::Stopped(t, total)),
            (None, _) => Ok(()),
        };
        Ran {
            outputs: Outputs { outputs },
            result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::resource;
    use futures::channel::oneshot;
    use std::cell::RefCell;

    type Log = RefCell<Vec<&'static str>>;

    #[test]
    fn independent_nodes_run_together_and_dependents_read_typed_outputs() {
        let (tx, rx) = oneshot::channel::<u32>();
        let mut g: Graph<'_, Log> = Graph::new();
        // `a` finishes only once `b` has run: they must be started together.
        let a = g.add(resource("vpc", "a"), &[], move |log: &Log, _| {
            Box::pin(async move {
                let got = rx.await.map_err(|e| CloudError::new(e.to_string()))?;
                log.borrow_mut().push("a");
                Ok(Done::new(format!("vpc-{got}"), "created"))
            })
        });
        let b = g.add(resource("address", "b"), &[], move |log, _| {
            Box::pin(async move {
                log.borrow_mut().push("b");
                tx.send(7).map_err(|_| CloudError::new("a is gone"))?;
                Ok(Done::shown(7u32))
            })
        });
        let c = g.add(
            resource("instance", "c").with_detail("needs both"),
            &[a.into(), b.into()],
            move |log, i| {
                Box::pin(async move {
                    log.borrow_mut().push("c");
                    Ok(Done::shown(format!("{} {}", i.get(a), i.get(b))))
                })
            },
        );
        let plan = g.plan();
        assert_eq!(plan.steps.len(), 2);
        assert_eq!(plan.steps[1].resources[0].needs, vec![1, 2]);
        assert!(plan.to_string().contains("[after 1, 2]"), "{plan}");

        let log = Log::default();
        let ran = futures::executor::block_on(g.run(&log, &Progress::new(), None));
        ran.result.unwrap();
        assert_eq!(*log.borrow(), ["b", "a", "c"]);
        assert_eq!(ran.outputs.get(c).unwrap(), "vpc-7 7");
    }

    #[test]
    fn a_failure_stops_what_depends_on_it_and_carries_the_cloud_code() {
        let mut g: Graph<'_, Log> = Graph::new();
        let a = g.add(resource("subnet", "s"), &[], |_: &Log, _| {
            Box::pin(async {
                Err::<Done<()>, _>(
                    CloudError::action("create the subnet", "the VPC has instances")
                        .with_code("DependencyViolation"),
                )
            })
        });
        let ok = g.add(resource("s3-bucket", "b"), &[], |log, _| {
            Box::pin(async move {
                log.borrow_mut().push("bucket");
                Ok(Done::new((), ""))
            })
        });
        g.add(
            resource("instance", "m"),
            &[a.into(), ok.into()],
            |log, _| {
                Box::pin(async move {
                    log.borrow_mut().push("instance");
                    Ok(Done::new((), ""))
                })
            },
        );
        let log = Log::default();
        let ran = futures::executor::block_on(g.run(&log, &Progress::new(), None));
        let e = ran.result.unwrap_err();
        assert!(e.cloud().unwrap().is("DependencyViolation"));
        assert_eq!(
            e.to_string(),
            "subnet s: failed to create the subnet: DependencyViolation: the VPC has instances"
        );
        assert_eq!(*log.borrow(), ["bucket"], "the instance never started");
        assert!(ran.outputs.get(ok).is_some(), "what was made is reported");
    }

    #[test]
    fn a_run_can_stop_after_a_step() {
        let mut g: Graph<'_, Log> = Graph::new();
        let a = g.add(resource("vpc", "a"), &[], |_: &Log, _| {
            Box::pin(async { Ok(Done::new((), "")) })
        });
        let b = g.add(resource("subnet", "b"), &[a.into()], |_, _| {
            Box::pin(async { Ok(Done::new((), "")) })
        });
        let log = Log::default();
        let ran = futures::executor::block_on(g.run(&log, &Progress::new(), Some(1)));
        assert!(matches!(ran.result, Err(UpError::Stopped(1, 2))));
        assert!(ran.outputs.get(a).is_some() && ran.outputs.get(b).is_none());
    }
}

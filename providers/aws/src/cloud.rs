//! The SDK clients, cluster tags and retries shared by `up`, `down` and `status`.

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use aws_smithy_http_client::tls;
use aws_smithy_types::error::display::DisplayErrorContext;
use std::future::Future;
use std::time::Duration;

/// kube-up's tag, kept so kube-up era tooling (and the in-tree cloud provider) recognises us.
pub const KUBE_TAG: &str = "KubernetesCluster";
/// rktup's own cluster tag.
pub const CLUSTER_TAG: &str = "rktup.io/cluster";
/// Which of the cluster's resources this is (`vpc`, `subnet`, `master`, ...).
pub const ROLE_TAG: &str = "rktup.io/role";

/// Every AWS error is the engine's typed one: what failed, EC2's (or S3's, Auto Scaling's)
/// error code and message.
pub type Error = rktup_provider::CloudError;

/// "failed to <what>: <code>: <message>", for any SDK error, with the code kept apart.
pub fn sdk_error<E>(what: &str, e: E) -> Error
where
    E: ProvideErrorMetadata + std::error::Error,
{
    match e.code() {
        Some(code) => Error::action(what, e.message().unwrap_or_default()).with_code(code),
        None => Error::action(what, DisplayErrorContext(&e).to_string()),
    }
}

/// How hard to retry: throttling and 5xx inside the SDK (standard mode, exponential back-off
/// with jitter), eventual consistency and dependency errors here, with the same shape.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// Full jitter: a random delay up to base * 2^attempt, capped.
    pub fn delay(&self, attempt: u32) -> Duration {
        let cap = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay);
        let ms = cap.as_millis().max(1) as u64;
        Duration::from_millis(rand::random_range(ms / 2..=ms))
    }
}

#[derive(Clone)]
pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub asg: aws_sdk_autoscaling::Client,
    pub s3: aws_sdk_s3::Client,
    pub elb: aws_sdk_elasticloadbalancing::Client,
    /// The machines' roles and instance profiles (`iam.rs`).
    pub iam: aws_sdk_iam::Client,
    pub retry: RetryPolicy,
    pub region: String,
    /// Set when AWS_ENDPOINT_URL (or an explicit endpoint) points somewhere else than AWS.
    pub endpoint: Option<String>,
}

impl Clients {
    /// Credentials from the standard chain; the endpoint from `endpoint`, else AWS_ENDPOINT_URL
    /// (read by the SDK itself), else AWS.
    pub async fn connect(region: &str, endpoint: Option<&str>, retry: RetryPolicy) -> Clients {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .http_client(http)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(retry.max_attempts)
                    .with_initial_backoff(retry.base)
                    .with_max_backoff(retry.max_delay),
            );
        if let Some(e) = endpoint {
            loader = loader.endpoint_url(e);
        }
        let conf = loader.load().await;
        let endpoint = conf.endpoint_url().map(str::to_string);
        let s3conf = aws_sdk_s3::config::Builder::from(&conf)
            .force_path_style(endpoint.is_some())
            .build();
        Clients {
            ec2: aws_sdk_ec2::Client::new(&conf),
            asg: aws_sdk_autoscaling::Client::new(&conf),
            s3: aws_sdk_s3::Client::from_conf(s3conf),
            elb: aws_sdk_elasticloadbalancing::Client::new(&conf),
            iam: aws_sdk_iam::Client::new(&conf),
            retry,
            region: region.to_string(),
            endpoint,
        }
    }

    /// Runs `f` again while it fails with one of `codes` (eventual consistency right after a
    /// create, DependencyViolation while something is still going away), with back-off and
    /// jitter. Throttling and 5xx are already retried by the SDK underneath.
    pub async fn retry_on<T, E, F, Fut>(
        &self,
        what: &str,
        codes: &[&str],
        mut f: F,
    ) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: ProvideErrorMetadata + std::error::Error,
    {
        let mut attempt = 0;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let code = e.code().unwrap_or_default().to_string();
                    attempt += 1;
                    if attempt >= self.retry.max_attempts || !codes.iter().any(|c| code == *c) {
                        return Err(sdk_error(what, e));
                    }
                    tokio::time::sleep(self.retry.delay(attempt)).await;
                }
            }
        }
    }
}

/// Error codes EC2 returns for a resource it just created but does not show everywhere yet.
pub const NOT_FOUND_YET: &[&str] = &[
    "InvalidInstanceID.NotFound",
    "InvalidVpcID.NotFound",
    "InvalidSubnetID.NotFound",
    "InvalidGroup.NotFound",
    "InvalidRouteTableID.NotFound",
    "InvalidInternetGatewayID.NotFound",
    "InvalidDhcpOptionID.NotFound",
    "InvalidAllocationID.NotFound",
    "InvalidLaunchTemplateName.NotFoundException",
    "InvalidAMIID.NotFound",
    "InvalidKeyPair.NotFound",
];

pub fn tags(cluster: &str, role: &str, name: &str) -> Vec<Tag> {
    [
        (KUBE_TAG, cluster),
        (CLUSTER_TAG, cluster),
        (ROLE_TAG, role),
        ("Name", name),
    ]
    .into_iter()
    .map(|(k, v)| Tag::builder().key(k).value(v).build())
    .collect()
}

pub fn tag_spec(kind: ResourceType, cluster: &str, role: &str, name: &str) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(tags(cluster, role, name)))
        .build()
}

pub fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// The filters that find the cluster's resource with `role` (any role when `None`).
pub fn cluster_filters(cluster: &str, role: Option<&str>) -> Vec<Filter> {
    let mut f = vec![filter(&format!("tag:{CLUSTER_TAG}"), cluster)];
    if let Some(r) = role {
        f.push(filter(&format!("tag:{ROLE_TAG}"), r));
    }
    f
}

pub fn tag_value<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

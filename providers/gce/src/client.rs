//! A small Compute Engine and Cloud Storage JSON API client: reqwest (rustls) for HTTP,
//! gcp_auth for Application Default Credentials. Every call counts as one round trip so the
//! benchmarks can compare the critical path with kube-up's serial order.

use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const COMPUTE_DEFAULT: &str = "https://compute.googleapis.com/compute/v1/";
pub const STORAGE_DEFAULT: &str = "https://storage.googleapis.com/storage/v1/";
pub const IAM_DEFAULT: &str = "https://iam.googleapis.com/v1/";
const SCOPES: &[&str] = &["https://www.googleapis.com/auth/cloud-platform"];

#[derive(Debug, thiserror::Error)]
pub enum GceError {
    #[error("failed to find Google credentials: {0}. Set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, run `gcloud auth application-default login`, or run on a Compute Engine VM")]
    Credentials(String),
    #[error("failed to get an access token: {0}")]
    Token(String),
    #[error("failed to {action}: HTTP {status} {reason}: {message}")]
    Api {
        action: String,
        status: u16,
        reason: String,
        message: String,
    },
    #[error("failed to {action}: {message}")]
    Http { action: String, message: String },
    #[error("failed to {action}: operation {operation} ended in error: {message}")]
    Operation {
        action: String,
        operation: String,
        /// The first error's code (`QUOTA_EXCEEDED`, ...).
        code: String,
        message: String,
    },
    #[error("failed to {action}: {message}")]
    Other { action: String, message: String },
}

impl GceError {
    pub fn other(action: impl Into<String>, message: impl Into<String>) -> GceError {
        GceError::Other {
            action: action.into(),
            message: message.into(),
        }
    }
}

/// The engine's typed error: GCE's reason (or an operation's first error code) as the code.
impl From<GceError> for rktup_provider::CloudError {
    fn from(e: GceError) -> Self {
        use rktup_provider::CloudError;
        match e {
            GceError::Api {
                action,
                status,
                reason,
                message,
            } => CloudError::action(action, message)
                .with_code(reason)
                .with_status(status),
            GceError::Operation {
                action,
                operation,
                code,
                message,
            } => CloudError::action(
                action,
                format!("operation {operation} ended in error: {message}"),
            )
            .with_code(code),
            GceError::Http { action, message } | GceError::Other { action, message } => {
                CloudError::action(action, message)
            }
            e => CloudError::new(e.to_string()),
        }
    }
}

impl From<GceError> for rktup_provider::UpError {
    fn from(e: GceError) -> Self {
        rktup_provider::UpError::Cloud(e.into())
    }
}

/// Where the APIs live: Google's hosts unless overridden (gcloud's
/// CLOUDSDK_API_ENDPOINT_OVERRIDES_{COMPUTE,STORAGE}).
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Ends in `compute/v1/`.
    pub compute: String,
    /// Ends in `storage/v1/`; uploads go to the same root under `upload/storage/v1/`.
    pub storage: String,
    /// Ends in `v1/` (CLOUDSDK_API_ENDPOINT_OVERRIDES_IAM): the master's service account.
    pub iam: String,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            compute: COMPUTE_DEFAULT.into(),
            storage: STORAGE_DEFAULT.into(),
            iam: IAM_DEFAULT.into(),
        }
    }
}

fn with_slash(s: &str) -> String {
    if s.ends_with('/') {
        s.to_string()
    } else {
        format!("{s}/")
    }
}

impl Endpoints {
    pub fn new(compute: Option<&str>, storage: Option<&str>) -> Endpoints {
        Endpoints {
            compute: with_slash(compute.unwrap_or(COMPUTE_DEFAULT)),
            storage: with_slash(storage.unwrap_or(STORAGE_DEFAULT)),
            iam: IAM_DEFAULT.into(),
        }
    }

    /// The IAM API at `iam` instead of Google's.
    pub fn with_iam(mut self, iam: Option<&str>) -> Endpoints {
        if let Some(i) = iam {
            self.iam = with_slash(i);
        }
        self
    }

    pub fn upload(&self) -> String {
        match self.storage.strip_suffix("storage/v1/") {
            Some(root) => format!("{root}upload/storage/v1/"),
            None => format!("{}upload/", self.storage),
        }
    }
}

/// Back-off for operation polls and retried calls.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    fn next(&self, d: Duration) -> Duration {
        (d * 3 / 2).min(self.max)
    }
}

const MAX_RETRIES: u32 = 6;

pub struct Client {
    http: reqwest::Client,
    auth: Arc<dyn gcp_auth::TokenProvider>,
    pub endpoints: Endpoints,
    pub project: String,
    pub backoff: Backoff,
    calls: AtomicUsize,
}

/// What one API call answered.
pub enum Answer {
    Found(Value),
    NotFound,
    /// 409: what we asked to create exists already (someone else, or a killed `up`, made it).
    Conflict,
}

impl Client {
    /// Application Default Credentials, in gcp_auth's order: GOOGLE_APPLICATION_CREDENTIALS,
    /// gcloud's application-default credentials, the metadata server, the gcloud CLI.
    ///
    /// `credentials` names a service-account key file explicitly instead (tests run several
    /// fakes in one process, so they can't share GOOGLE_APPLICATION_CREDENTIALS).
    pub async fn new(
        endpoints: Endpoints,
        project: &str,
        credentials: Option<&std::path::Path>,
    ) -> Result<Client, GceError> {
        if project.is_empty() {
            return Err(GceError::Credentials(
                "no project: set PROJECT (or --project), or `gcloud config set project NAME`"
                    .into(),
            ));
        }
        let auth: Arc<dyn gcp_auth::TokenProvider> = match credentials {
            Some(path) => Arc::new(
                gcp_auth::CustomServiceAccount::from_file(path)
                    .map_err(|e| GceError::Credentials(format!("{}: {e}", path.display())))?,
            ),
            None => gcp_auth::provider()
                .await
                .map_err(|e| GceError::Credentials(e.to_string()))?,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| GceError::Http {
                action: "build the HTTP client".into(),
                message: e.to_string(),
            })?;
        Ok(Client {
            http,
            auth,
            endpoints,
            project: project.to_string(),
            backoff: Backoff::default(),
            calls: AtomicUsize::new(0),
        })
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// `projects/P/...` under the compute endpoint.
    pub fn compute(&self, path: &str) -> String {
        format!(
            "{}projects/{}/{}",
            self.endpoints.compute, self.project, path
        )
    }

    /// `projects/P/...` under the IAM endpoint.
    pub fn iam(&self, path: &str) -> String {
        format!("{}projects/{}/{}", self.endpoints.iam, self.project, path)
    }

    pub fn storage(&self, path: &str) -> String {
        format!("{}{}", self.endpoints.storage, path)
    }

    async fn token(&self) -> Result<String, GceError> {
        let t = self
            .auth
            .token(SCOPES)
            .await
            .map_err(|e| GceError::Token(e.to_string()))?;
        Ok(t.as_str().to_string())
    }

    /// One call, retried on 429 and 5xx with back-off. 404 and 409 are answers, not errors.
    pub async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Body<'_>>,
        action: &str,
    ) -> Result<Answer, GceError> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = self.token().await?;
            let mut req = self.http.request(method.clone(), url).bearer_auth(token);
            match &body {
                Some(Body::Json(v)) => req = req.json(v),
                Some(Body::Bytes(b)) => {
                    req = req
                        .header("content-type", "application/octet-stream")
                        .body(b.to_vec())
                }
                None => {}
            }
            self.calls.fetch_add(1, Ordering::Relaxed);
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if attempt < MAX_RETRIES && (e.is_connect() || e.is_timeout()) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                    continue;
                }
                Err(e) => {
                    return Err(GceError::Http {
                        action: action.into(),
                        message: e.to_string(),
                    })
                }
            };
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = resp.text().await.map_err(|e| GceError::Http {
                action: action.into(),
                message: e.to_string(),
            })?;
            if (status == 429 || status >= 500) && attempt < MAX_RETRIES {
                tokio::time::sleep(retry_after.unwrap_or(delay)).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                continue;
            }
            return match status {
                200..=299 => {
                    if text.trim().is_empty() {
                        Ok(Answer::Found(Value::Null))
                    } else {
                        serde_json::from_str(&text)
                            .map(Answer::Found)
                            .map_err(|e| GceError::Http {
                                action: action.into(),
                                message: format!("unreadable answer: {e}"),
                            })
                    }
                }
                404 => Ok(Answer::NotFound),
                409 => Ok(Answer::Conflict),
                _ => Err(api_error(action, status, &text)),
            };
        }
    }

    pub async fn get(&self, url: &str, action: &str) -> Result<Option<Value>, GceError> {
        match self.call(reqwest::Method::GET, url, None, action).await? {
            Answer::Found(v) => Ok(Some(v)),
            _ => Ok(None),
        }
    }

    /// Every item of a paged list.
    pub async fn list(&self, url: &str, action: &str) -> Result<Vec<Value>, GceError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page_url = match &token {
                Some(t) => format!("{url}?pageToken={t}"),
                None => url.to_string(),
            };
            let Some(page) = self.get(&page_url, action).await? else {
                return Ok(out);
            };
            if let Some(items) = page.get("items").and_then(Value::as_array) {
                out.extend(items.iter().cloned());
            }
            match page.get("nextPageToken").and_then(Value::as_str) {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    /// Inserts and waits for the operation. `false`: it existed already (409).
    pub async fn insert(&self, url: &str, body: &Value, action: &str) -> Result<bool, GceError> {
        match self
            .call(reqwest::Method::POST, url, Some(Body::Json(body)), action)
            .await?
        {
            Answer::Found(op) => {
                self.wait(&op, action).await?;
                Ok(true)
            }
            Answer::Conflict => Ok(false),
            Answer::NotFound => Err(GceError::other(action, "404 Not Found")),
        }
    }

    /// Deletes and waits. `false`: it was gone already.
    pub async fn delete(&self, url: &str, action: &str) -> Result<bool, GceError> {
        match self
            .call(reqwest::Method::DELETE, url, None, action)
            .await?
        {
            Answer::Found(op) => {
                if op.get("kind").and_then(Value::as_str) == Some("compute#operation") {
                    self.wait(&op, action).await?;
                }
                Ok(true)
            }
            Answer::NotFound => Ok(false),
            Answer::Conflict => Err(GceError::other(action, "409 Conflict")),
        }
    }

    /// Polls a zone, region or global operation through its selfLink until DONE, with back-off,
    /// and shows an operation error in GCE's own words.
    pub async fn wait(&self, op: &Value, action: &str) -> Result<(), GceError> {
        let mut op = op.clone();
        let mut delay = self.backoff.first;
        loop {
            if op.get("status").and_then(Value::as_str) == Some("DONE") {
                return operation_result(&op, action);
            }
            let Some(link) = op.get("selfLink").and_then(Value::as_str) else {
                // Not an operation (storage answers with the object itself).
                return Ok(());
            };
            let link = self.rebase(link);
            tokio::time::sleep(delay).await;
            delay = self.backoff.next(delay);
            op = self
                .get(&link, action)
                .await?
                .ok_or_else(|| GceError::other(action, format!("operation {link} vanished")))?;
        }
    }

    /// selfLinks name Google's host; with an endpoint override, follow them there instead
    /// (operations, and every resource `down` deletes by its selfLink): a private or regional
    /// endpoint must never be bypassed.
    pub fn rebase(&self, link: &str) -> String {
        match link.find("/compute/v1/") {
            Some(i) if !link.starts_with(&self.endpoints.compute) => {
                let rest = &link[i + "/compute/v1/".len()..];
                format!("{}{}", self.endpoints.compute, rest)
            }
            _ => link.to_string(),
        }
    }
}

pub enum Body<'a> {
    Json(&'a Value),
    Bytes(&'a [u8]),
}

fn operation_result(op: &Value, action: &str) -> Result<(), GceError> {
    let Some(errors) = op
        .pointer("/error/errors")
        .and_then(Value::as_array)
        .filter(|e| !e.is_empty())
    else {
        return Ok(());
    };
    let message = errors
        .iter()
        .map(|e| {
            format!(
                "{} ({})",
                e.get("message").and_then(Value::as_str).unwrap_or("?"),
                e.get("code").and_then(Value::as_str).unwrap_or("?")
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let code = errors
        .first()
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Err(GceError::Operation {
        action: action.into(),
        code,
        operation: op
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string(),
        message,
    })
}

fn api_error(action: &str, status: u16, text: &str) -> GceError {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let message = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| text.chars().take(500).collect());
    let reason = v
        .pointer("/error/errors/0/reason")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    GceError::Api {
        action: action.into(),
        status,
        reason,
        message,
    }
}

/// The last path segment of a URL (`.../zones/us-central1-b` → `us-central1-b`).
pub fn last_segment(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

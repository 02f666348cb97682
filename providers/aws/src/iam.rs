//! The machines' identities (kops' way: an IAM role and instance profile per role of machine):
//! what each may read of the staging bucket, and nothing else. The master's role may get the
//! rktup binaries and its private keys (`pki-*`); the nodes' role only the binaries. Both are
//! found again by name (`rktup-<region>-<cluster>-master|node`, IAM names are account-wide)
//! and tagged with the cluster, so `down` removes them without local state.

use crate::cloud::{sdk_error, Clients, Error, CLUSTER_TAG, KUBE_TAG, ROLE_TAG};
use aws_sdk_iam::error::ProvideErrorMetadata;
use aws_sdk_iam::types::Tag;
use rktup_render::MASTER_PKI_PREFIX;
use serde_json::json;

/// The inline policy's name on each role.
pub const POLICY_NAME: &str = "rktup-staging-bucket";

/// EC2 may hand the role to an instance; nobody else may assume it.
fn trust_policy() -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }],
    })
    .to_string()
}

/// The objects of `bucket` a machine of `role` may get: the binaries (`rktup-<sha12>`) for
/// every machine, the private keys (`pki-*`) for the master alone.
pub fn bucket_policy(bucket: &str, role: &str) -> serde_json::Value {
    let mut objects = vec![format!("arn:aws:s3:::{bucket}/rktup-*")];
    if role == "master" {
        objects.push(format!("arn:aws:s3:::{bucket}/{MASTER_PKI_PREFIX}*"));
    }
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "StagingBucketObjects",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": objects,
        }],
    })
}

/// The name of `role`'s IAM role and instance profile (both the same).
pub fn identity_name(region: &str, cluster: &str, role: &str) -> String {
    format!("rktup-{region}-{cluster}-{role}")
}

fn tags(cluster: &str, role: &str) -> Result<Vec<Tag>, Error> {
    [
        (KUBE_TAG, cluster),
        (CLUSTER_TAG, cluster),
        (ROLE_TAG, role),
    ]
    .into_iter()
    .map(|(k, v)| {
        Tag::builder()
            .key(k)
            .value(v)
            .build()
            .map_err(|e| Error::new(e.to_string()))
    })
    .collect()
}

fn exists<T, E: ProvideErrorMetadata>(r: Result<T, E>) -> Result<bool, E> {
    match r {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some("NoSuchEntity") => Ok(false),
        Err(e) => Err(e),
    }
}

/// Makes (or finds) `role`'s IAM role with its bucket policy and its instance profile holding
/// it; returns the instance profile's name. The policy is put every time, so a changed bucket
/// or rule is applied by the next `up`.
pub async fn identity(
    c: &Clients,
    cluster: &str,
    role: &str,
    bucket: &str,
) -> Result<String, Error> {
    let iam = &c.iam;
    let name = identity_name(&c.region, cluster, role);
    let found = exists(iam.get_role().role_name(&name).send().await)
        .map_err(|e| sdk_error("look up the IAM role", e))?;
    if !found {
        match iam
            .create_role()
            .role_name(&name)
            .assume_role_policy_document(trust_policy())
            .description(format!("rktup cluster {cluster}: the {role}'s instances"))
            .set_tags(Some(tags(cluster, role)?))
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == Some("EntityAlreadyExists") => {}
            Err(e) => return Err(sdk_error(&format!("create IAM role {name}"), e)),
        }
    }
    iam.put_role_policy()
        .role_name(&name)
        .policy_name(POLICY_NAME)
        .policy_document(bucket_policy(bucket, role).to_string())
        .send()
        .await
        .map_err(|e| sdk_error(&format!("put the bucket policy on IAM role {name}"), e))?;
    let profile = match iam
        .get_instance_profile()
        .instance_profile_name(&name)
        .send()
        .await
    {
        Ok(out) => out.instance_profile,
        Err(e) if e.code() == Some("NoSuchEntity") => None,
        Err(e) => return Err(sdk_error("look up the instance profile", e)),
    };
    let has_role = match &profile {
        Some(p) => p.roles().iter().any(|r| r.role_name() == name),
        None => {
            match iam
                .create_instance_profile()
                .instance_profile_name(&name)
                .set_tags(Some(tags(cluster, role)?))
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if e.code() == Some("EntityAlreadyExists") => {}
                Err(e) => return Err(sdk_error(&format!("create instance profile {name}"), e)),
            }
            false
        }
    };
    if !has_role {
        match iam
            .add_role_to_instance_profile()
            .instance_profile_name(&name)
            .role_name(&name)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == Some("LimitExceeded") => {}
            Err(e) => return Err(sdk_error("put the role into its instance profile", e)),
        }
    }
    Ok(name)
}

/// One of the cluster's identities as `down` and `status` see it.
#[derive(Debug, Clone)]
pub struct FoundIdentity {
    pub name: String,
    pub role: &'static str,
}

/// The cluster's identities that exist: an IAM role of that name carrying the cluster's tag,
/// or an instance profile of that name (a run killed between the two creates).
pub async fn find(c: &Clients, cluster: &str) -> Result<Vec<FoundIdentity>, Error> {
    let iam = &c.iam;
    let mut found = Vec::new();
    for role in ["master", "node"] {
        let name = identity_name(&c.region, cluster, role);
        let role_tagged = match iam.get_role().role_name(&name).send().await {
            Ok(out) => out.role().is_some_and(|r| {
                r.tags()
                    .iter()
                    .any(|t| t.key() == CLUSTER_TAG && t.value() == cluster)
            }),
            Err(e) if e.code() == Some("NoSuchEntity") => false,
            Err(e) => return Err(sdk_error("look up the IAM roles", e)),
        };
        let profile = exists(
            iam.get_instance_profile()
                .instance_profile_name(&name)
                .send()
                .await,
        )
        .map_err(|e| sdk_error("look up the instance profiles", e))?;
        if role_tagged || profile {
            found.push(FoundIdentity { name, role });
        }
    }
    Ok(found)
}

/// Deletes one identity: the role out of the profile, the profile, the role's policy, the role.
/// Each step that finds nothing left to do is skipped, so a half-deleted identity goes too.
pub async fn delete(c: &Clients, id: &FoundIdentity) -> Result<(), Error> {
    let iam = &c.iam;
    let name = &id.name;
    let gone = |r: Result<(), aws_sdk_iam::Error>, what: &str| match r {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some("NoSuchEntity") => Ok(()),
        Err(e) => Err(sdk_error(&format!("{what} {name}"), e)),
    };
    gone(
        iam.remove_role_from_instance_profile()
            .instance_profile_name(name)
            .role_name(name)
            .send()
            .await
            .map(drop)
            .map_err(Into::into),
        "take the role out of instance profile",
    )?;
    gone(
        iam.delete_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
            .map(drop)
            .map_err(Into::into),
        "delete instance profile",
    )?;
    gone(
        iam.delete_role_policy()
            .role_name(name)
            .policy_name(POLICY_NAME)
            .send()
            .await
            .map(drop)
            .map_err(Into::into),
        "delete the bucket policy of IAM role",
    )?;
    gone(
        iam.delete_role()
            .role_name(name)
            .send()
            .await
            .map(drop)
            .map_err(Into::into),
        "delete IAM role",
    )
}

//! Command-line flags for the settings table, built at run time from [`SETTINGS`] so a setting
//! added to the table gets its flag, help line and value name without more code.

use crate::provider::Provider;
use crate::spec::settings_for;
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use std::collections::BTreeMap;
use std::marker::PhantomData;

/// Ties a flag set to one provider at compile time (clap's `Args` has no run-time parameter).
pub trait ProviderTag {
    const PROVIDER: Provider;
}

#[derive(Debug)]
pub struct GceTag;
#[derive(Debug)]
pub struct AwsTag;
#[derive(Debug)]
pub struct LocalTag;

impl ProviderTag for GceTag {
    const PROVIDER: Provider = Provider::Gce;
}
impl ProviderTag for AwsTag {
    const PROVIDER: Provider = Provider::Aws;
}
impl ProviderTag for LocalTag {
    const PROVIDER: Provider = Provider::Local;
}

/// The setting flags given for one provider: setting key → (flag as typed, value).
pub struct SettingFlags<P> {
    pub values: BTreeMap<&'static str, (String, String)>,
    _provider: PhantomData<P>,
}

impl<P> std::fmt::Debug for SettingFlags<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.values.iter()).finish()
    }
}

impl<P> Clone for SettingFlags<P> {
    fn clone(&self) -> Self {
        SettingFlags {
            values: self.values.clone(),
            _provider: PhantomData,
        }
    }
}

impl<P: ProviderTag> FromArgMatches for SettingFlags<P> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut values = BTreeMap::new();
        for spec in settings_for(P::PROVIDER) {
            let Some(flag) = spec.flag else { continue };
            if let Ok(Some(v)) = matches.try_get_one::<String>(spec.key) {
                values.insert(spec.key, (format!("--{flag}"), v.clone()));
            }
        }
        Ok(SettingFlags {
            values,
            _provider: PhantomData,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        let other = Self::from_arg_matches(matches)?;
        self.values.extend(other.values);
        Ok(())
    }
}

impl<P: ProviderTag> Args for SettingFlags<P> {
    fn augment_args(cmd: Command) -> Command {
        let args = settings_for(P::PROVIDER).filter_map(|spec| {
            let flag = spec.flag?;
            let env_names: Vec<&str> = spec.env_names(P::PROVIDER).collect();
            let default = spec.default_for(P::PROVIDER);
            let mut help = format!("{} [env: {}]", spec.help, env_names.join(", "));
            if !default.is_empty() {
                help.push_str(&format!(" [default: {default}]"));
            }
            let mut arg = Arg::new(spec.key)
                .long(flag)
                .visible_aliases(spec.flag_aliases.iter().copied())
                .value_name(spec.kind.value_name())
                .help(help)
                .help_heading("Settings (flag > env > --config file > default)")
                .action(ArgAction::Set)
                .global(true);
            if spec.kind == crate::kind::Kind::Bool {
                // `--preemptible-node` alone means true, as a switch would.
                arg = arg.num_args(0..=1).default_missing_value("true");
            }
            Some(arg)
        });
        cmd.args(args)
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// Settings that have a flag on no provider (they are set by global flags or env only).
pub fn global_flag_for(key: &str) -> Option<&'static str> {
    match key {
        "INSTANCE_PREFIX" => Some("--name"),
        "LOG_LEVEL" => Some("-v/--verbosity"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SETTINGS;

    #[test]
    fn every_key_has_a_way_in() {
        for s in SETTINGS {
            assert!(s.flag.is_some() || global_flag_for(s.key).is_some() || !s.env.is_empty());
        }
    }
}

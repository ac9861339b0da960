//! `claudecluster kube render`: the objects the Kubernetes runtime would
//! create for a session with the server's default limits, for an admin to
//! review (or to check with `kubectl apply --dry-run=server -f -`).

use crate::runtime::KubeArgs;
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum KubeCommand {
    /// Print the Pod, token Secret and NetworkPolicy of an example session
    /// as one JSON `List` (the token redacted).
    #[command(
        after_help = "Examples:\n  claudecluster kube render\n  claudecluster kube render --kube-namespace sessions --kube-runtime-class gvisor | kubectl apply --dry-run=server -f -"
    )]
    Render(RenderArgs),
}

#[derive(Args)]
pub struct RenderArgs {
    /// Worker image of the session.
    #[arg(
        long,
        env = "CLAUDECLUSTER_IMAGE",
        default_value = "claudecluster-worker:latest"
    )]
    image: String,
    /// Prefix of the objects' names.
    #[arg(long, env = "CLAUDECLUSTER_RESOURCE_PREFIX", default_value = cc_runtime_docker::DEFAULT_PREFIX)]
    resource_prefix: String,
    #[command(flatten)]
    kube: KubeArgs,
    #[command(flatten)]
    workspace: crate::runtime::WorkspaceArgs,
}

pub async fn run(cmd: KubeCommand) -> anyhow::Result<()> {
    let KubeCommand::Render(mut args) = cmd;
    if args.kube.kube_gateway_url.is_none() {
        args.kube.kube_gateway_url =
            Some(cc_runtime_kubernetes::KubeSettings::example().gateway_url);
    }
    let settings = args.kube.settings(&args.resource_prefix, &args.workspace)?;
    settings.validate()?;
    let spec = cc_core::SessionSpec {
        id: cc_core::SessionId::generate(),
        image: args.image,
        limits: cc_core::LimitsPolicy::default().default,
        agent_token: cc_core::Token::from_string("<redacted: 64 hex digits per session>".into()),
        pooled: false,
    };
    println!("{}", render(&settings, &spec)?);
    Ok(())
}

/// The session's objects as a pretty-printed `v1 List`.
fn render(
    settings: &cc_runtime_kubernetes::KubeSettings,
    spec: &cc_core::SessionSpec,
) -> anyhow::Result<String> {
    use cc_runtime_kubernetes::manifest;
    // The API types serialize their own apiVersion and kind.
    let items = vec![
        serde_json::to_value(manifest::pod(settings, spec))?,
        serde_json::to_value(manifest::secret(settings, spec))?,
        serde_json::to_value(manifest::network_policy(settings, &spec.id))?,
    ];
    Ok(serde_json::to_string_pretty(&serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": items,
    }))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_render_is_a_list_of_typed_objects_without_the_token() {
        let settings = cc_runtime_kubernetes::KubeSettings::example();
        let spec = cc_core::SessionSpec {
            id: cc_core::SessionId::generate(),
            image: "claudecluster-worker:latest".into(),
            limits: cc_core::LimitsPolicy::default().default,
            agent_token: cc_core::Token::generate(),
            pooled: false,
        };
        let text = render(&settings, &spec).unwrap();
        assert!(!text.contains(spec.agent_token.expose()));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let kinds: Vec<_> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                format!(
                    "{}/{}",
                    i["apiVersion"].as_str().unwrap(),
                    i["kind"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            kinds,
            ["v1/Pod", "v1/Secret", "networking.k8s.io/v1/NetworkPolicy"]
        );
    }
}

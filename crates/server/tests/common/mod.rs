//! What the server's Docker-free test files share.

use cc_core::{
    ContainerStatus, Placement, ResourceUsage, Runtime, RuntimeError, RuntimeEventStream,
    SessionId, SessionSpec,
};
use futures_util::StreamExt;

/// Starts containers nowhere: a created session stays `starting` while its
/// actor waits for a sessiond that never answers; nothing else is asked.
pub struct FakeRuntime;

impl Runtime for FakeRuntime {
    async fn create(&self, spec: &SessionSpec) -> Result<Placement, RuntimeError> {
        Ok(Placement {
            container_id: format!("fake-{}", spec.id),
            agent_url: "http://127.0.0.1:9".into(),
            gateway_url: "http://127.0.0.1:9".into(),
        })
    }
    async fn remove(&self, _: &SessionId) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn inspect(&self, _: &SessionId) -> Result<Option<ContainerStatus>, RuntimeError> {
        Ok(None)
    }
    async fn list(&self) -> Result<Vec<SessionId>, RuntimeError> {
        Ok(Vec::new())
    }
    async fn locate(&self, _: &SessionId) -> Result<Option<Placement>, RuntimeError> {
        Ok(None)
    }
    async fn events(&self) -> Result<RuntimeEventStream, RuntimeError> {
        Ok(futures_util::stream::pending().boxed())
    }
    async fn stats(&self, _: &SessionId) -> Result<Option<ResourceUsage>, RuntimeError> {
        Ok(None)
    }
}

//! Choosing an OCI runtime (gVisor's `runsc`) for session containers:
//! Docker must know it, and a clear message says how when it does not.

use cc_runtime_docker::DockerRuntime;

#[tokio::test]
async fn an_unknown_container_runtime_is_refused_with_a_fix() {
    let rt = DockerRuntime::connect("cct-rtopt-")
        .await
        .expect("Docker answers");
    let err = match rt
        .clone()
        .with_container_runtime("cc-no-such-runtime")
        .await
    {
        Ok(_) => panic!("an unknown runtime was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("no runtime named \"cc-no-such-runtime\""),
        "{err}"
    );
    assert!(err.contains("runc"), "lists the runtimes Docker has: {err}");
    assert!(err.contains("daemon.json"), "{err}");
    // Docker's own default runtime is always there.
    assert!(rt.with_container_runtime("runc").await.is_ok());
}

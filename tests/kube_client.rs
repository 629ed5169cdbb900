//! The operator's Kubernetes client (`kube_client::build`) against the real API server: it speaks
//! HTTP/2 (one connection for every request in flight, not one each), and everything the
//! operator does through it works, watches included.

mod support;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};

#[tokio::test]
async fn the_operators_client_speaks_http2_and_watches() {
    let plane = support::control_plane_with_crd().await;
    let config = plane.kube_config().await.expect("config");
    let client = lineworks_operator::kube_client::build(config).expect("client");

    let answer = client
        .send(
            http::Request::get("/version")
                .body(kube::client::Body::empty())
                .expect("request"),
        )
        .await
        .expect("answer");
    assert_eq!(answer.version(), http::Version::HTTP_2, "ALPN chose HTTP/2");

    let ns = plane
        .create_namespace(&client, "kube-client")
        .await
        .expect("namespace");
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let mut events = watcher(maps.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    // Many requests at once over the one connection.
    let created = futures::future::join_all((0..50).map(|i| {
        let maps = maps.clone();
        async move {
            let map: ConfigMap = serde_json::from_value(
                serde_json::json!({"metadata": {"name": format!("m{i}")}, "data": {"i": i.to_string()}}),
            )
            .expect("map");
            maps.create(&PostParams::default(), &map).await
        }
    }))
    .await;
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let mut seen = std::collections::BTreeSet::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while seen.len() < 50 {
            let map = events.next().await.expect("stream").expect("event");
            seen.insert(map.metadata.name.unwrap_or_default());
        }
    })
    .await
    .expect("the watch saw every ConfigMap");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    namespaces
        .delete(&ns, &Default::default())
        .await
        .expect("cleanup");
}

//! The Envoy RLS front end through a real tonic client over loopback: the descriptor mapping,
//! all-or-nothing decisions, hits_addend, unknown descriptors, statuses and headers, shedding,
//! store outages, drain, reflection and metrics. The HTTP API over the same state shows that both
//! front ends see the same counts.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::{
    Entry, RateLimitOverride,
};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::r#type::v3::RateLimitUnit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::UInt64Value;
use support::{send, SlowStore, SwitchableStore, TestService};
use tollgate_core::clock::SystemClock;
use tollgate_core::config::{parse_toml, ConfigManager};
use tollgate_core::store::MemoryStore;
use tollgate_core::{Limiter, StoreErrorPolicy};
use tollgate_server::state::AppState;
use tonic::transport::Channel;

const CONFIG: &str = r#"
[tenants.shop.actions]
user = { max_requests = 3, window_duration_seconds = 60 }
"generic_key|path" = { max_requests = 2, window_duration_seconds = 1 }
odd = { max_requests = 5, window_duration_seconds = 90 }
roomy = { max_requests = 100, window_duration_seconds = 60 }
two = { limits = [
  { name = "per-minute", max_requests = 100, window_duration_seconds = 60 },
  { name = "per-second", max_requests = 2, window_duration_seconds = 1 },
] }

[tenants.shop.clients.vip]
user = { max_requests = 10, window_duration_seconds = 3600 }
"#;

fn config() -> ConfigManager {
    let doc = parse_toml(std::path::Path::new("rls.toml"), CONFIG).expect("valid config");
    ConfigManager::in_memory(doc).expect("valid config")
}

/// A service over a switchable memory store, as the HTTP tests build it, with `policy`.
fn service(policy: StoreErrorPolicy) -> TestService {
    let store = Arc::new(SwitchableStore {
        inner: MemoryStore::new(Arc::new(SystemClock), 1_000_000),
        down: std::sync::atomic::AtomicBool::new(false),
    });
    let limiter = Arc::new(Limiter::new(Arc::new(config()), store.clone(), policy));
    let state = AppState::new(limiter.clone(), None);
    let app = tollgate_server::api::router(state.clone());
    TestService {
        state,
        limiter,
        store,
        app,
    }
}

/// The RLS listener over `state` on a free loopback port; stops when the guard drops.
struct Rls {
    addr: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_rls(state: AppState) -> Rls {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(tollgate_server::rls::serve(listener, state, async {
        let _ = stopped.await;
    }));
    Rls { addr, _stop: stop }
}

async fn channel(rls: &Rls) -> Channel {
    for _ in 0..100 {
        if let Ok(c) = Channel::from_shared(format!("http://{}", rls.addr))
            .unwrap()
            .connect()
            .await
        {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("RLS listener did not come up on {}", rls.addr);
}

fn desc(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        ..Default::default()
    }
}

fn request(domain: &str, descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.into(),
        descriptors,
        hits_addend: 0,
    }
}

async fn ask(
    client: &mut RateLimitServiceClient<Channel>,
    req: RateLimitRequest,
) -> Result<RateLimitResponse, tonic::Status> {
    client.should_rate_limit(req).await.map(|r| r.into_inner())
}

/// `current_requests` of a key through the HTTP status endpoint.
async fn http_count(svc: &TestService, tenant: &str, client: &str, action: &str) -> u64 {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let uri = format!(
        "/api/status/{}/{}/{}",
        enc(tenant),
        enc(client),
        enc(action)
    );
    let r = send(&svc.app, Method::GET, &uri, None, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()["current_requests"].as_u64().unwrap()
}

fn header<'a>(resp: &'a RateLimitResponse, name: &str) -> Option<&'a str> {
    resp.response_headers_to_add
        .iter()
        .find(|h| h.key == name)
        .map(|h| h.value.as_str())
}

#[tokio::test]
async fn one_entry_descriptor_is_action_and_client_and_counts_agree_with_http() {
    let svc = service(StoreErrorPolicy::Allow);
    let rls = start_rls(svc.state.clone()).await;
    let mut c = RateLimitServiceClient::new(channel(&rls).await);
    for expected_remaining in [2, 1, 0] {
        let r = ask(&mut c, request("shop", vec![desc(&[("user", "alice")])]))
            .await
            .unwrap();
        assert_eq!(r.overall_code, Code::Ok as i32);
        let s = &r.statuses[0];
        assert_eq!(s.code, Code::Ok as i32);
        assert_eq!(s.limit_remaining, expected_remaining);
        let cl = s.current_limit.as_ref().unwrap();
        assert_eq!((cl.requests_per_unit, cl.unit), (3, Unit::Minute as i32));
        let reset = s.duration_until_reset.unwrap();
        assert!(reset.seconds <= 60 && (reset.seconds, reset.nanos) > (0, 0));
    }
    let r = ask(&mut c, request("shop", vec![desc(&[("user", "alice")])]))
        .await
        .unwrap();
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].limit_remaining, 0);
    // The same key as the HTTP API's (shop, alice, user): visible through its status endpoint.
    assert_eq!(http_count(&svc, "shop", "alice", "user").await, 3);
    // A client-specific limit wins over the action's.
    let r = ask(&mut c, request("shop", vec![desc(&[("user", "vip")])]))
        .await
        .unwrap();
    let cl = r.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!((cl.requests_per_unit, cl.unit), (10, Unit::Hour as i32));
    assert_eq!(r.statuses[0].limit_remaining, 9);
}

#[tokio::test]
async fn several_entries_join_keys_and_values_in_order() {
    let svc = service(StoreErrorPolicy::Allow);
    let rls = start_rls(svc.state.clone()).await;
    let mut c = RateLimitServiceClient::new(channel(&rls).await);
    let d = desc(&[("generic_key", "api"), ("path", "/a|b")]);
    let r = ask(&mut c, request("shop", vec![d])).await.unwrap();
    assert_eq!(r.overall_code, Code::Ok as i32);
    let cl = r.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!((cl.requests_per_unit, cl.unit), (2, Unit::Second as i32));
    assert_eq!(
        http_count(&svc, "shop", "api|/a\\|b", "generic_key|path").await,
        1
    );
}

#[tokio::test]
async fn over_limit_on_any_descriptor_consumes_on_none() {
    let svc = service(StoreErrorPolicy::Allow);
    let rls = start_rls(svc.state.clone()).await;
    let mut c = RateLimitServiceClient::new(channel(&rls).await);
    // Exhaust bob's `user` limit.
    for _ in 0..3 {
        ask(&mut c, request("shop", vec![desc(&[("user", "bob")])]))
            .await
            .unwrap();
    }
    let r = ask(
        &mut c,
        request(
            "shop",
            vec![desc(&[("roomy", "bob")]), desc(&[("user", "bob")])],
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].code, Code::Ok as i32);
    assert_eq!(r.statuses[0].limit_remaining, 100);
    assert_eq!(r.statuses[1].code, Code::OverLimit as i32);
    assert_eq!(http_count(&svc, "shop", "bob", "roomy").await, 0);
    assert_eq!(http_count(&svc, "shop", "bob", "user").await, 3);
    // Headers follow the descriptor that is over its limit.
    assert_eq!(header(&r, "ratelimit-limit"), Some("3"));
    assert_eq!(header(&r, "ratelimit-remaining"), Some("0"));
    let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
}

#[tokio::test]
async fn allowed_request_consumes_every_descriptor_and_headers_show_the_tightest() {
    let svc = service(StoreErrorPolicy::Allow);
    let rls = start_rls(svc.state.clone()).await;
    let mut c = RateLimitServiceClient::new(channel(&rls).await);
    let r = ask(
        &mut c,
        request(
            "shop",
            vec![desc(&[("roomy", "carol")]), desc(&[("user", "carol")])],
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(r.statuses[0].limit_remaining, 99);
    assert_eq!(r.statuses[1].limit_remaining, 2);
    assert_eq!(header(&r, "ratelimit-limit"), Some("3"));
    assert_eq!(header(&r, "ratelimit-remaining"), Some("2"));
    let reset: u64 = header(&r, "ratelimit-reset").unwrap().parse().unwrap();
    assert!((1..=60).contains(&reset));
    assert_eq!(header(&r, "retry-after"), None);
    assert_eq!(http_count(&svc, "shop", "carol", "roomy").await, 1);
    assert_eq!(http_count(&svc, "shop", "carol", "user").await, 1);
}

#[tokio::test]
async fn hits_addend_per_descriptor_else_per_request_and_zero_is_one() {
    let svc = service(StoreErrorPolicy::Allow);
    let rls = start_rls(svc.state.clone()).await;
    let mut c = RateLimitServiceClient::new(channel(&rls).await);
    let mut req = request("shop", vec![desc(&[("roomy", "dan")])]);
    req.hits_addend = 5;
    ask(&mut c, req).await.unwrap();
    assert_eq!(http_count(&svc, "shop", "dan", "roomy").await, 5);
    let mut d = desc(&[("roomy", "dan")]);
    d.hits_addend = Some(UInt64Value { value: 7 });
    let mut req = request("shop", vec![d]);
    req.hits_addend = 5;
    ask(&mut c, req).await.unwrap();
    assert_eq!(http_count(&svc, "shop", "dan", "roomy").await, 12);
    let mut d = desc(&[("roomy", "dan")]);
    d.hits_addend = Some(UInt64Value { value: 0 });
    ask(&mut c, request("shop", vec![d])).await.unwrap();
    ask(&mut c, request("shop", vec![desc(&[("roomy", "dan")])]))
        .await
        .unwrap();
    assert_eq!(http_count(&svc, "shop", "dan", "roomy").await, 14);
    // A cost no window can hold is over the limit, as Envoy's ratelimit answers it: the whole
    // request is OVER_LIMIT and consumes nothing, on that descriptor or any other.
    let mut over = desc(&[("user", "dan")]);
    over.hits_addend = Some(UInt64Value { value: 4 });
    let mut fits = desc(&[("roomy", "dan")]);
    fits.hits_addend = Some(UInt64Value { value: 1 });
    let r = ask(&mut c, request("shop", vec![fits, over]))
        .await
        .unwrap();
    assert_eq!(r.overall_code, Code::OverLimit as i32, "{r:?}");
    assert_eq!(r.statuses[0].code, Code::Ok as i32, "{r:?}");
    assert_eq!(r.statuses[1].code, Code::OverLimit as i32, "{r:?}");
    let limit = r.statuses[1].current_limit.as_ref().expect("current_limit");
    assert_eq!(limit.requests_per_unit, 3);
    assert_eq!(r.statuses[1].limit_remaining, 3, "{r:?}");
    assert_eq!(http_count(&svc, "shop", "dan", "roomy").await, 14);
    assert_eq!(http_count(&svc, "shop", "dan", "user").await, 0);
    // The request-wide hits_addend is over the limit the same way.
    let mut req = request("shop", vec![desc(&[("user", "dan")])]);
    req.hits_addend = 4;
    let r = ask(&mut c, req).await.unwrap();
    assert_eq!(r.overall_code, Code::OverLimit as i32, "{r:?}");
    assert_eq!(http_count(&svc, "shop", "dan", "user").await, 0);
}

#[tokio::test]
async fn unknown_descriptors_are_ok_unless_they_carry_a_limit() {
    let svc = service(StoreErrorPolicy::Allow);
    let rls = start_rls(svc.state.clone()).await;
    let mut c = RateLimitServiceClient::new(channel(&rls).await);
    for _ in 0..3 {
        let r = ask(&mut c, request("shop", vec![desc(&[("nobody", "x")])]))
            .await
            .unwrap();
        assert_eq!(r.overall_code, Code::Ok as i32);
        assert_eq!(r.statuses[0].code, Code::Ok as i32);
        assert!(r.statuses[0].current_limit.is_none());
        assert!(r.response_headers_to_add.is_empty());
    }
    // An unknown tenant too.
    let r = ask(&mut c, request("elsewhere", vec![desc(&[("user", "x")])]))
        .await
        .unwrap();
    assert_eq!(r.overall_code, Code::Ok as i32);
    // The descriptor's own limit applies when nothing is configured.
    let mut d = desc(&[("ip", "10.0.0.1")]);
    d.limit = Some(RateLimitOverride {
        requests_per_unit: 1,
        unit: RateLimitUnit::Hour as i32,
    });
    let r = ask(&mut c, request("shop", vec![d.clone()])).await.unwrap();
    assert_eq!(r.overall_code, Code::Ok as i32);
    let cl = r.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!((cl.requests_per_unit, cl.unit), (1, Unit::Hour as i32));
    let r = ask(&mut c, request("shop", vec![d])).await.unwrap();
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    // ...but a configured action limit wins over it.
    let mut d = desc(&[("user", "erin")]);
    d.limit = Some(RateLimitOverride {
        requests_per_unit: 1000,
        unit: RateLimitUnit::Second as i32,
    });
    let r = ask(&mut c, request("shop", vec![d])).await.unwrap();
    let cl = r.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!(cl.requests_per_unit, 3);
}

#[tokio::test]
async fn a_window_that_is_not_a_whole_unit_reports_unknown_with_the_window_in_the_name() {
    let svc = service(StoreErrorPolicy::Allow);
    let rls = start_rls(svc.state.clone()).await;
    let mut c = RateLimitServiceClient::new(channel(&rls).await);
    let r = ask(&mut c, request("shop", vec![desc(&[("odd", "x")])]))
        .await
        .unwrap();
    let cl = r.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!(cl.unit, Unit::Unknown as i32);
    assert_eq!(cl.requests_per_unit, 5);
    assert_eq!(cl.name, "action: 5 per 90s");
}

/// With several limits on a key, `current_limit` names the limit the status reports (the one with
/// the fewest remaining, or the one that denied), not the policy's first.
#[tokio::test]
async fn current_limit_names_the_reported_limit_of_a_two_limit_key() {
    let svc = service(StoreErrorPolicy::Allow);
    let rls = start_rls(svc.state.clone()).await;
    let mut c = RateLimitServiceClient::new(channel(&rls).await);
    for (n, code) in [(1, Code::Ok), (2, Code::Ok), (3, Code::OverLimit)] {
        let r = ask(&mut c, request("shop", vec![desc(&[("two", "x")])]))
            .await
            .unwrap();
        let st = &r.statuses[0];
        assert_eq!(st.code, code as i32, "call {n}: {r:?}");
        let cl = st.current_limit.as_ref().unwrap();
        assert_eq!(cl.name, "per-second", "call {n}: {r:?}");
        assert_eq!(cl.requests_per_unit, 2, "call {n}");
        assert_eq!(cl.unit, Unit::Second as i32, "call {n}");
    }
}

#[tokio::test]
async fn bad_requests_are_invalid_argument_and_the_service_stays_up() {
    let svc = service(StoreErrorPolicy::Allow);
    let rls = start_rls(svc.state.clone()).await;
    let mut c = RateLimitServiceClient::new(channel(&rls).await);
    let cases = vec![
        request("", vec![desc(&[("user", "a")])]),
        request("shop", vec![]),
        request("shop", vec![desc(&[])]),
        request("shop", vec![desc(&[("user", "")])]),
        request("shop", vec![desc(&[("user", "a\u{7}")])]),
        request("shop", vec![desc(&[("user", &"x".repeat(300))])]),
        {
            let mut d = desc(&[("ip", "1")]);
            d.limit = Some(RateLimitOverride {
                requests_per_unit: 0,
                unit: RateLimitUnit::Second as i32,
            });
            request("shop", vec![d])
        },
    ];
    for req in cases {
        let e = ask(&mut c, req.clone()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{req:?}: {e:?}");
        assert!(!e.message().is_empty());
    }
    let mut d = desc(&[("user", "a")]);
    d.is_negative_hits = true;
    let e = ask(&mut c, request("shop", vec![d])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);
    let r = ask(&mut c, request("shop", vec![desc(&[("user", "a")])]))
        .await
        .unwrap();
    assert_eq!(r.overall_code, Code::Ok as i32);
}

#[tokio::test]
async fn store_down_is_unavailable_under_deny_and_ok_under_allow() {
    for (policy, expect_ok) in [
        (StoreErrorPolicy::Deny, false),
        (StoreErrorPolicy::Allow, true),
    ] {
        let svc = service(policy);
        let rls = start_rls(svc.state.clone()).await;
        let mut c = RateLimitServiceClient::new(channel(&rls).await);
        svc.store.down.store(true, Ordering::SeqCst);
        let r = ask(&mut c, request("shop", vec![desc(&[("user", "fay")])])).await;
        if expect_ok {
            let r = r.unwrap();
            assert_eq!(r.overall_code, Code::Ok as i32);
        } else {
            assert_eq!(r.unwrap_err().code(), tonic::Code::Unavailable);
        }
        svc.store.down.store(false, Ordering::SeqCst);
        let r = ask(&mut c, request("shop", vec![desc(&[("user", "fay")])]))
            .await
            .unwrap();
        assert_eq!(
            r.statuses[0].limit_remaining, 2,
            "the outage counted nothing"
        );
    }
}

#[tokio::test]
async fn shed_by_the_load_manager_is_unavailable() {
    let doc = parse_toml(
        std::path::Path::new("rls.toml"),
        "[global]\nmax_global_concurrent_requests = 1\nmax_tenant_queue_size = 0\nqueue_timeout_ms = 1000\n",
    )
    .unwrap();
    let limiter = Arc::new(Limiter::new(
        Arc::new(ConfigManager::in_memory(doc).unwrap()),
        Arc::new(SlowStore {
            inner: MemoryStore::default(),
            delay: Duration::from_millis(500),
        }),
        StoreErrorPolicy::Allow,
    ));
    let state = AppState::new(limiter, None);
    let rls = start_rls(state.clone()).await;
    let chan = channel(&rls).await;
    let mut slow = RateLimitServiceClient::new(chan.clone());
    let mut d = desc(&[("user", "gil")]);
    d.limit = Some(RateLimitOverride {
        requests_per_unit: 10,
        unit: RateLimitUnit::Minute as i32,
    });
    let first = {
        let req = request("shop", vec![d.clone()]);
        tokio::spawn(async move { ask(&mut slow, req).await })
    };
    for _ in 0..100 {
        if state.engine().load().in_flight == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(state.engine().load().in_flight, 1);
    let mut c = RateLimitServiceClient::new(chan);
    let e = ask(&mut c, request("shop", vec![d])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(first.await.unwrap().is_ok());
    let m = support::parse_metrics(&state.metrics().render(state.engine()));
    assert_eq!(
        m.get(r#"tollgate_decisions_total{api="rls",outcome="shed",tenant="shop"}"#),
        Some(&1.0)
    );
    assert_eq!(
        m.get(r#"tollgate_decisions_total{api="rls",outcome="allowed",tenant="shop"}"#),
        Some(&1.0)
    );
}

#[tokio::test]
async fn health_serves_until_draining_then_not_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let svc = service(StoreErrorPolicy::Allow);
    let rls = start_rls(svc.state.clone()).await;
    let mut h = HealthClient::new(channel(&rls).await);
    for name in ["", "envoy.service.ratelimit.v3.RateLimitService"] {
        let r = h
            .check(HealthCheckRequest {
                service: name.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{name:?}");
    }
    svc.state.begin_drain();
    for name in ["", "envoy.service.ratelimit.v3.RateLimitService"] {
        let mut status = 0;
        for _ in 0..100 {
            status = h
                .check(HealthCheckRequest {
                    service: name.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            if status == ServingStatus::NotServing as i32 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(status, ServingStatus::NotServing as i32, "{name:?}");
    }
}

#[tokio::test]
async fn reflection_lists_the_service_and_describes_its_request() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let svc = service(StoreErrorPolicy::Allow);
    let rls = start_rls(svc.state.clone()).await;
    let mut r = ServerReflectionClient::new(channel(&rls).await);
    let reqs = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "envoy.service.ratelimit.v3.RateLimitService".into(),
            )),
        },
    ];
    let mut stream = r
        .server_reflection_info(futures_util::stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let list = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = list.message_response else {
        panic!("expected a service list, got {list:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"envoy.service.ratelimit.v3.RateLimitService"));
    assert!(names.contains(&"grpc.health.v1.Health"));
    let file = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(f)) = file.message_response else {
        panic!("expected descriptors, got {file:?}");
    };
    assert!(!f.file_descriptor_proto.is_empty());
}

#[tokio::test]
async fn rls_decisions_are_counted_under_api_rls() {
    let svc = service(StoreErrorPolicy::Allow);
    let rls = start_rls(svc.state.clone()).await;
    let mut c = RateLimitServiceClient::new(channel(&rls).await);
    for _ in 0..4 {
        ask(&mut c, request("shop", vec![desc(&[("user", "hal")])]))
            .await
            .unwrap();
    }
    let m = support::parse_metrics(&svc.state.metrics().render(svc.state.engine()));
    let get = |s: &str| m.get(s).copied();
    assert_eq!(
        get(r#"tollgate_decisions_total{api="rls",outcome="allowed",tenant="shop"}"#),
        Some(3.0)
    );
    assert_eq!(
        get(r#"tollgate_decisions_total{api="rls",outcome="denied",tenant="shop"}"#),
        Some(1.0)
    );
    assert_eq!(
        get(r#"tollgate_decisions_total{api="http",outcome="allowed",tenant="shop"}"#),
        Some(0.0)
    );
    assert_eq!(
        get(r#"tollgate_decision_duration_seconds_count{api="rls"}"#),
        Some(4.0)
    );
}

//! Long-polling is at-least-once like the other transports: a poll whose
//! `last_event_id` cookie does not show the previous response's id (that response was
//! lost in flight) receives those events again; a confirming poll does not.
use tidegate_testkit::gateway::{greeting, GatewayBuilder};
use tidegate_testkit::longpoll::LongPoll;

const SUBS: &str = "subscriptions=%5B%7B%22eventType%22%3A%22greeting%22%7D%5D";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_poll_response_is_delivered_again() {
    let gw = GatewayBuilder::new().greeting_extractors().start().await;
    let mut lp = LongPoll::new(gw.url("/_rig/v1/connection/longpolling"));
    let first = lp.get(SUBS, &[]).await;
    assert_eq!(first.status, 200);
    let handshake = lp.poll().await;
    assert_eq!(
        handshake.events.len(),
        2,
        "rig.connection.create and rig.subscriptions_set"
    );

    gw.publish(&greeting("john", "g1")).await;
    gw.publish(&greeting("mike", "g2")).await;
    let before = lp.cookie("last_event_id").unwrap().to_string();
    let delivered = lp.poll().await;
    let ids: Vec<&str> = delivered
        .events
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["g1", "g2"]);

    // Pretend that response never arrived: the client still holds the old cookie.
    lp.cookies.insert("last_event_id".into(), before);
    let again = lp.poll().await;
    let ids: Vec<&str> = again
        .events
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["g1", "g2"], "the lost events come again");
    assert_eq!(again.last_event_id, delivered.last_event_id);

    // Now confirmed (the cookie carries the id): nothing is repeated.
    gw.publish(&greeting("ann", "g3")).await;
    let next = lp.poll().await;
    let ids: Vec<&str> = next
        .events
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["g3"]);
    gw.shutdown().await;
}

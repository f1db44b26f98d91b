//! The `eventGridTrigger` payload (`Data.event`): one event or an array, in the Event Grid schema or CloudEvents 1.0,
//! possibly JSON-encoded in a string; then what `ArmEvents` reads from each event.
#![no_main]

use edgevault::protocol::decode;
use edgevault::resource_id::ResourceId;
use edgevault::triggers::{GridEvent, SubscriptionValidationData};
use edgevault_fuzz::{json, same_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(value) = json(data) else { return };
    let Ok(events) = GridEvent::list_from_value(value, "Data.event") else { return };
    for event in &events {
        // The schema is chosen by `specversion`, which serialization keeps, so an event reads back as itself (in the
        // other schema it would serialize with other keys).
        let back = serde_json::to_value(event).expect("an accepted event serializes");
        let again = GridEvent::from_value(back.clone(), "e").expect("an event reads its own serialization");
        let again = serde_json::to_value(&again).expect("serializes");
        assert!(same_json(&again, &back), "the event changed in a serialization round trip:\n{again}\n{back}");

        let _ = (event.id(), event.event_type(), event.subject());
        let _ = decode::<SubscriptionValidationData>(event.data().clone(), "e.data");
        if let Ok(action) = event.resource_action("e") {
            let _ = action.resource_uri.parse::<ResourceId>();
        }
    }
});

//! The wire model against the model page's canonical examples, every Kontext rule
//! at its edges, and the inbound decoder's shapes.

use runware_ws::protocol::{
    ClientTask, DeliveryMethod, ErrorKind, ImageInference, OutputFormat, OutputType, ResultItem, SharedStr, TaskStatus,
    decode_frame, encode_frame,
};
use runware_ws::{Kontext, KontextBuilder, KontextSize};
use serde_json::{Value, json};
use std::path::PathBuf;

fn fixtures() -> Vec<(String, Value, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kontext");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".request.json").map(str::to_string))
        .collect();
    names.sort();
    assert_eq!(names.len(), 5, "five canonical examples");
    names
        .into_iter()
        .map(|n| {
            let read = |suffix: &str| -> Value {
                serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{n}.{suffix}.json"))).unwrap()).unwrap()
            };
            let req = read("request");
            let resp = read("response");
            (n, req, resp)
        })
        .collect()
}

#[test]
fn canonical_requests_round_trip_through_the_typed_form() {
    for (name, req, _) in fixtures() {
        let typed: ImageInference = serde_json::from_value(req.clone()).unwrap();
        assert!(typed.extra.is_empty(), "{name}: every field is modelled");
        runware_ws::protocol::kontext::validate(&typed).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(serde_json::to_value(&typed).unwrap(), req, "{name}");
        let task: ClientTask = serde_json::from_value(req.clone()).unwrap();
        assert!(matches!(task, ClientTask::ImageInference(_)), "{name}");
        assert_eq!(serde_json::to_value(&task).unwrap(), req, "{name}");
    }
}

#[test]
fn canonical_responses_round_trip_through_the_typed_form() {
    for (name, req, resp) in fixtures() {
        let item: ResultItem = serde_json::from_value(resp.clone()).unwrap();
        assert!(item.extra.is_empty(), "{name}: every field is modelled");
        assert_eq!(item.task_uuid.unwrap().to_string(), req["taskUUID"], "{name}");
        assert_eq!(item.seed, req["seed"].as_u64(), "{name}");
        assert_eq!(item.cost, Some(0.04));
        assert_eq!(serde_json::to_value(&item).unwrap(), resp, "{name}");
        // The same item through the frame decoder.
        let frame = SharedStr::from(json!({ "data": [resp.clone()] }).to_string());
        let decoded = decode_frame(&frame).unwrap();
        assert_eq!(decoded.items.len(), 1);
        assert_eq!(serde_json::to_value(&decoded.items[0]).unwrap(), resp, "{name}");
    }
}

#[test]
fn the_builder_produces_the_canonical_requests() {
    for (name, req, _) in fixtures() {
        let bfl = &req["providerSettings"]["bfl"];
        let built = Kontext::builder()
            .task_uuid(req["taskUUID"].as_str().unwrap().parse().unwrap())
            .prompt(req["positivePrompt"].as_str().unwrap())
            .dimensions(req["width"].as_u64().unwrap() as u32, req["height"].as_u64().unwrap() as u32)
            .seed(req["seed"].as_u64().unwrap())
            .prompt_upsampling(bfl["promptUpsampling"].as_bool().unwrap())
            .safety_tolerance(bfl["safetyTolerance"].as_u64().unwrap() as u32)
            .reference_image(req["inputs"]["referenceImages"][0].as_str().unwrap())
            .build()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(serde_json::to_value(&built).unwrap(), req, "{name}");
    }
}

fn base() -> KontextBuilder {
    Kontext::builder().prompt("Make it night").size(KontextSize::R1x1)
}

fn refused(b: KontextBuilder, parameter: &str) {
    let err = b.build().expect_err("must be refused");
    assert!(err.names(parameter), "expected {parameter} in {err}");
    assert!(err.to_string().contains(parameter));
}

#[test]
fn prompt_length_counts_characters() {
    assert!(Kontext::builder().prompt("ab").size(KontextSize::R1x1).build().is_ok());
    assert!(
        Kontext::builder().prompt("é".repeat(3000)).size(KontextSize::R1x1).build().is_ok(),
        "6000 bytes, 3000 chars"
    );
    refused(Kontext::builder().prompt("a").size(KontextSize::R1x1), "positivePrompt");
    refused(Kontext::builder().prompt("a".repeat(3001)).size(KontextSize::R1x1), "positivePrompt");
    refused(Kontext::builder().size(KontextSize::R1x1), "positivePrompt");
}

#[test]
fn sizes_are_the_nine_pairs_and_only_together() {
    for size in KontextSize::ALL {
        let (w, h) = size.dimensions();
        let t = Kontext::builder().prompt("ok").dimensions(w, h).build().unwrap();
        assert_eq!((t.width, t.height), (Some(w), Some(h)));
        let by_aspect = Kontext::builder().prompt("ok").size_str(size.aspect()).build().unwrap();
        assert_eq!((by_aspect.width, by_aspect.height), (Some(w), Some(h)));
        let by_text = Kontext::builder().prompt("ok").size_str(format!("{w}x{h}")).build().unwrap();
        assert_eq!(by_text.width, Some(w));
    }
    refused(Kontext::builder().prompt("ok").dimensions(1000, 1000), "width");
    refused(Kontext::builder().prompt("ok").dimensions(1248, 1248), "width");
    refused(Kontext::builder().prompt("ok").width(1024), "height");
    refused(Kontext::builder().prompt("ok").height(1024), "width");
    refused(Kontext::builder().prompt("ok"), "width");
    refused(Kontext::builder().prompt("ok").size_str("5:4"), "width");
    refused(Kontext::builder().prompt("ok").size_str("huge"), "width");
}

#[test]
fn numeric_ranges_have_both_edges() {
    assert!(base().seed(0).build().is_ok());
    assert!(base().seed(9_223_372_036_854_775_807).build().is_ok());
    refused(base().seed(9_223_372_036_854_775_808), "seed");
    assert!(base().number_results(1).build().is_ok());
    assert!(base().number_results(20).build().is_ok());
    refused(base().number_results(0), "numberResults");
    refused(base().number_results(21), "numberResults");
    assert!(base().output_quality(20).build().is_ok());
    assert!(base().output_quality(99).build().is_ok());
    refused(base().output_quality(19), "outputQuality");
    refused(base().output_quality(100), "outputQuality");
    assert!(base().safety_tolerance(0).build().is_ok());
    assert!(base().safety_tolerance(6).build().is_ok());
    refused(base().safety_tolerance(7), "providerSettings.bfl.safetyTolerance");
    refused(base().safety_tolerance(1000), "providerSettings.bfl.safetyTolerance");
}

#[test]
fn ttl_is_at_least_sixty_and_only_with_urls() {
    assert!(base().ttl(60).build().is_ok());
    assert!(base().ttl(60).output_type(OutputType::Url).build().is_ok());
    refused(base().ttl(59), "ttl");
    refused(base().ttl(3600).output_type(OutputType::Base64Data), "ttl");
    refused(base().ttl(3600).output_type(OutputType::DataUri), "ttl");
}

#[test]
fn urls_must_be_absolute_http() {
    assert!(
        base().webhook_url("https://hooks.example.com/x").upload_endpoint("http://127.0.0.1:9/put").build().is_ok()
    );
    refused(base().webhook_url("/relative"), "webhookURL");
    refused(base().webhook_url("ftp://example.com/x"), "webhookURL");
    refused(base().upload_endpoint("not a url"), "uploadEndpoint");
}

#[test]
fn reference_images_take_four_forms() {
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
    let t = base()
        .reference_image("59a2edc2-45e6-429f-be5f-7ded59b92046")
        .reference_image("https://example.com/a.jpg")
        .reference_image(format!("data:image/png;base64,{png}"))
        .reference_image(png)
        .build()
        .unwrap();
    assert_eq!(t.reference_images().len(), 4);
    refused(
        base().reference_image("https://example.com/a.jpg").reference_image("just words"),
        "inputs.referenceImages[1]",
    );
    refused(base().reference_image_file("/definitely/not/here.png"), "inputs.referenceImages[0]");
}

#[test]
fn all_violations_are_reported_together() {
    let err = Kontext::builder()
        .prompt("x")
        .dimensions(1000, 1000)
        .number_results(0)
        .output_quality(100)
        .ttl(59)
        .safety_tolerance(7)
        .seed(u64::MAX)
        .reference_image("nope")
        .build()
        .unwrap_err();
    assert_eq!(
        err.parameters(),
        [
            "positivePrompt",
            "width",
            "seed",
            "numberResults",
            "outputQuality",
            "ttl",
            "inputs.referenceImages[0]",
            "providerSettings.bfl.safetyTolerance"
        ]
    );
    for v in &err.violations {
        assert!(!v.rule.is_empty() && !v.value.is_empty(), "{v}");
    }
    assert!(err.to_string().contains("got 1000×1000"), "{err}");
}

#[test]
fn options_serialize_with_wire_names() {
    let t = base()
        .output_type(OutputType::Base64Data)
        .output_format(OutputFormat::Webp)
        .output_quality(80)
        .delivery_method(DeliveryMethod::Async)
        .include_cost(true)
        .check_content(true)
        .safety_mode(runware_ws::protocol::SafetyMode::Fast)
        .number_results(3)
        .build()
        .unwrap();
    let v = serde_json::to_value(&t).unwrap();
    assert_eq!(v["outputType"], "base64Data");
    assert_eq!(v["outputFormat"], "WEBP");
    assert_eq!(v["outputQuality"], 80);
    assert_eq!(v["deliveryMethod"], "async");
    assert_eq!(v["includeCost"], true);
    assert_eq!(v["safety"], json!({"checkContent": true, "mode": "fast"}));
    assert_eq!(v["numberResults"], 3);
    assert_eq!(v["model"], "bfl:3@1");
    assert_eq!(v["taskType"], "imageInference");
}

#[test]
fn client_frames_are_arrays_and_decode_by_task_type() {
    let frame = json!([
        {"taskType":"authentication","apiKey":"k","connectionSessionUUID":"f40c2aeb-f8a7-4af7-a1ab-7594c9bf778f"},
        {"taskType":"ping","ping":true},
        {"taskType":"getResponse","taskUUID":"af0712bf-ab5d-4266-9268-2ad1258a3ac1"},
        {"taskType":"imageUpload","taskUUID":"af0712bf-ab5d-4266-9268-2ad1258a3ac2","image":"data:image/png;base64,AAAA"},
        {"taskType":"mediaStorage","taskUUID":"af0712bf-ab5d-4266-9268-2ad1258a3ac3","operation":"upload","media":"https://x/y.png"},
        {"taskType":"imageCaption","taskUUID":"af0712bf-ab5d-4266-9268-2ad1258a3ac4","inputImage":"x","future":{"a":1}}
    ]);
    let tasks: Vec<ClientTask> = serde_json::from_value(frame.clone()).unwrap();
    let kinds: Vec<&str> = tasks.iter().map(ClientTask::task_type).collect();
    assert_eq!(kinds, ["authentication", "ping", "getResponse", "imageUpload", "mediaStorage", "imageCaption"]);
    assert!(matches!(tasks[5], ClientTask::Raw(_)));
    assert_eq!(tasks[0].task_uuid(), None);
    assert_eq!(tasks[5].task_uuid().unwrap().to_string(), "af0712bf-ab5d-4266-9268-2ad1258a3ac4");
    let encoded: Value = serde_json::from_str(&encode_frame(&tasks).unwrap()).unwrap();
    assert_eq!(encoded, frame);
    assert!(!format!("{:?}", tasks[0]).contains("\"k\""), "the key is redacted in Debug");
}

#[test]
fn raw_tasks_need_a_type_and_a_uuid() {
    use runware_ws::protocol::RawTask;
    assert!(RawTask::new(json!({"taskType":"x","taskUUID":"af0712bf-ab5d-4266-9268-2ad1258a3ac4"})).is_ok());
    assert!(RawTask::new(json!({"taskType":"x"})).unwrap_err().names("taskUUID"));
    assert!(RawTask::new(json!({"taskUUID":"af0712bf-ab5d-4266-9268-2ad1258a3ac4"})).unwrap_err().names("taskType"));
    assert!(RawTask::new(json!({"taskType":"x","taskUUID":"nope"})).unwrap_err().names("taskUUID"));
    assert!(RawTask::new(json!([1])).unwrap_err().names("task"));
    assert!(RawTask::with_generated_uuid(json!({"taskType":"x"})).is_ok());
}

#[test]
fn envelopes_with_data_and_errors_route_per_item() {
    let a = "11111111-1111-4111-8111-111111111111";
    let b = "22222222-2222-4222-8222-222222222222";
    let text = SharedStr::from(
        json!({
            "data": [
                {"taskType":"imageInference","taskUUID":a,"imageUUID":"i1","imageBase64Data":"QUJD","seed":1,"NSFWContent":false,"newField":{"x":[1,2]}},
                {"taskType":"imageInference","taskUUID":b,"status":"processing","progress":40},
                {"taskType":"imageInference","taskUUID":b,"status":"error","error":{"code":"providerError","message":"boom"}},
                {"taskType":"ping","pong":true},
                {"taskType":"authentication","connectionSessionUUID":"s-1"}
            ],
            "errors": [
                {"code":"invalidPositivePrompt","message":"bad","parameter":"positivePrompt","taskType":"imageInference","taskUUID":b}
            ]
        })
        .to_string(),
    );
    let f = decode_frame(&text).unwrap();
    assert_eq!(f.items.len(), 5);
    assert_eq!(f.errors.len(), 1);
    assert!(f.malformed.is_empty());
    let first = &f.items[0];
    assert_eq!(first.image_base64_data.as_deref(), Some("QUJD"));
    // Zero-copy: the payload points into the frame's buffer.
    let base = text.as_bytes().as_ptr() as usize;
    let p = first.image_base64_data.as_ref().unwrap().as_bytes().as_ptr() as usize;
    assert!(p > base && p < base + text.len());
    assert_eq!(first.get("newField"), Some(json!({"x":[1,2]})));
    assert_eq!(f.items[1].status, Some(TaskStatus::Processing));
    assert_eq!(f.items[1].progress, Some(40.0));
    assert!(f.items[2].is_error());
    assert_eq!(f.items[2].error.as_ref().unwrap().kind(), ErrorKind::Provider);
    assert_eq!(f.items[3].pong, Some(true));
    assert_eq!(f.items[4].connection_session_uuid.as_deref(), Some("s-1"));
    assert_eq!(f.errors[0].task_uuid().unwrap().to_string(), b);
    assert_eq!(f.errors[0].kind(), ErrorKind::Validation);
}

#[test]
fn error_variants_are_all_accepted() {
    let singular = decode_frame(&SharedStr::from(
        r#"{"error":{"code":"invalidApiKey","message":"no","parameter":"apiKey","taskType":"authentication"}}"#,
    ))
    .unwrap();
    assert_eq!(singular.errors[0].kind(), ErrorKind::Auth);
    let list = decode_frame(&SharedStr::from(r#"{"error":[{"code":"a"},{"code":"b"}]}"#)).unwrap();
    assert_eq!(list.errors.len(), 2);
    let legacy =
        decode_frame(&SharedStr::from(r#"{"error":true,"errorId":19,"errorMessage":"Invalid api key"}"#)).unwrap();
    assert_eq!(legacy.errors.len(), 1);
    assert_eq!(legacy.errors[0].kind(), ErrorKind::Auth);
    assert_eq!(legacy.errors[0].error_id, Some(19));
    let cross = decode_frame(&SharedStr::from(
        r#"{"errors":[{"code":"invalidDimensions","parameter":["width","height"],"allowedValues":{"0":"1024x1024","1":"1248x832"},"min":1,"context":{"a":1}}]}"#,
    ))
    .unwrap();
    let e = &cross.errors[0];
    assert!(e.parameter.as_ref().unwrap().contains("width"));
    assert!(e.allowed_values.as_ref().unwrap().is_object());
    assert!(e.extra.contains_key("context"));
    let arr = decode_frame(&SharedStr::from(r#"{"errors":[{"code":"x","allowedValues":["a","b"]}]}"#)).unwrap();
    assert!(arr.errors[0].allowed_values.as_ref().unwrap().is_array());
}

#[test]
fn malformed_entries_are_salvaged_not_fatal() {
    let good = "11111111-1111-4111-8111-111111111111";
    let bad = "22222222-2222-4222-8222-222222222222";
    let text = SharedStr::from(format!(
        r#"{{"data":[{{"taskUUID":"{good}","imageUUID":"x","imageURL":"http://a/b"}}, 42, ["x"]],"errors":["oops",{{"taskUUID":"{bad}","code":"x","message":7}}]}}"#
    ));
    let f = decode_frame(&text).unwrap();
    assert_eq!(f.items.len(), 1);
    assert_eq!(f.items[0].task_uuid.unwrap().to_string(), good);
    assert_eq!(f.malformed.len(), 4, "{:?}", f.malformed);
    assert!(f.malformed.iter().any(|m| m.task_uuid.map(|u| u.to_string()) == Some(bad.into())));
    // Known fields with odd types are kept in `extra`, not lost.
    let odd =
        decode_frame(&SharedStr::from(format!(r#"{{"data":[{{"taskUUID":"{good}","seed":-5,"cost":"free"}}]}}"#)))
            .unwrap();
    assert_eq!(odd.items[0].seed, None);
    assert_eq!(odd.items[0].get("seed"), Some(json!(-5)));
    assert_eq!(odd.items[0].get("cost"), Some(json!("free")));
    // Whole-frame failures are errors, never panics.
    assert!(decode_frame(&SharedStr::from("not json")).is_err());
    assert!(decode_frame(&SharedStr::from("[1,2]")).is_err());
    assert!(decode_frame(&SharedStr::from("\"s\"")).is_err());
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(decode_frame(&SharedStr::from(format!(r#"{{"data":{deep}}}"#))).is_ok_and(|f| !f.malformed.is_empty()));
}

#[test]
fn escaped_strings_are_unescaped() {
    let f = decode_frame(&SharedStr::from(
        r#"{"data":[{"taskUUID":"11111111-1111-4111-8111-111111111111","imageURL":"http:\/\/a\/b\u00e9"}]}"#,
    ))
    .unwrap();
    assert_eq!(f.items[0].image_url.as_deref(), Some("http://a/bé"));
}

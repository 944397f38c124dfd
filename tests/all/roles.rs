//! Role writes, reads, deletes and listing, and every role field's validation. None of
//! these need LiteLLM.

use litellm_secrets_tests::expect::{
    EngineResult, invalid_input, not_found, role_request, role_with_models,
};
use litellm_secrets_tests::host::{RoleRequest, TestHost};

#[tokio::test(flavor = "multi_thread")]
async fn role_write_read_round_trip() {
    let host = TestHost::new();
    let request = RoleRequest {
        models: Some(vec!["gpt-4o-mini".into(), "gpt-4o".into()]),
        max_budget: Some(2.5),
        budget_duration: Some("30d".into()),
        tpm_limit: Some(1000),
        rpm_limit: Some(60),
        max_parallel_requests: Some(4),
        key_alias_prefix: Some("team-a".into()),
        metadata: Some(r#"{"team":"a"}"#.into()),
        ttl: Some("1h".into()),
        max_ttl: Some("24h".into()),
    };
    let written = host.try_write_role("dev", &request).await.value();
    assert!(written.warnings.is_empty(), "{:?}", written.warnings);

    let role = host.try_read_role("dev").await.value();
    assert_eq!(role.name, "dev");
    assert_eq!(role.models, ["gpt-4o-mini", "gpt-4o"]);
    assert_eq!(role.max_budget, Some(2.5));
    assert_eq!(role.budget_duration.as_deref(), Some("30d"));
    assert_eq!(role.tpm_limit, Some(1000));
    assert_eq!(role.rpm_limit, Some(60));
    assert_eq!(role.max_parallel_requests, Some(4));
    assert_eq!(role.key_alias_prefix, "team-a");
    assert_eq!(role.metadata, r#"{"team":"a"}"#);
    assert_eq!(role.ttl, 3600);
    assert_eq!(role.max_ttl, 86_400);
}

#[tokio::test(flavor = "multi_thread")]
async fn role_defaults_apply_to_new_role() {
    let host = TestHost::new();
    let written = host.try_write_role("plain", &role_request()).await.value();
    let role = written.role;
    assert!(role.models.is_empty());
    assert_eq!(role.max_budget, None);
    assert_eq!(role.budget_duration, None);
    assert_eq!(role.tpm_limit, None);
    assert_eq!(role.key_alias_prefix, "vault");
    assert_eq!(role.metadata, "{}");
    assert_eq!(role.ttl, 0);
    assert_eq!(role.max_ttl, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_models_warns_unrestricted() {
    let host = TestHost::new();
    let written = host
        .try_write_role("open", &role_with_models(&[]))
        .await
        .value();
    assert_eq!(written.warnings.len(), 1);
    assert!(
        written.warnings[0].contains("every model"),
        "{}",
        written.warnings[0]
    );

    let scoped = host
        .try_write_role("scoped", &role_with_models(&["gpt-4o-mini"]))
        .await
        .value();
    assert!(scoped.warnings.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn update_keeps_omitted_fields() {
    let host = TestHost::new();
    let first = RoleRequest {
        models: Some(vec!["gpt-4o-mini".into()]),
        max_budget: Some(5.0),
        ttl: Some("10m".into()),
        ..role_request()
    };
    host.try_write_role("dev", &first).await.value();

    let second = RoleRequest {
        rpm_limit: Some(30),
        ..role_request()
    };
    let role = host.try_write_role("dev", &second).await.value().role;
    assert_eq!(role.models, ["gpt-4o-mini"]);
    assert_eq!(role.max_budget, Some(5.0));
    assert_eq!(role.ttl, 600);
    assert_eq!(role.rpm_limit, Some(30));
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_clears_limits_and_budget() {
    let host = TestHost::new();
    let limited = RoleRequest {
        max_budget: Some(5.0),
        budget_duration: Some("1d".into()),
        tpm_limit: Some(10),
        rpm_limit: Some(10),
        max_parallel_requests: Some(2),
        ..role_with_models(&["m"])
    };
    host.try_write_role("r", &limited).await.value();

    let cleared = RoleRequest {
        max_budget: Some(0.0),
        budget_duration: Some(String::new()),
        tpm_limit: Some(0),
        rpm_limit: Some(0),
        max_parallel_requests: Some(0),
        ..role_request()
    };
    let role = host.try_write_role("r", &cleared).await.value().role;
    assert_eq!(role.max_budget, None);
    assert_eq!(role.budget_duration, None);
    assert_eq!(role.tpm_limit, None);
    assert_eq!(role.rpm_limit, None);
    assert_eq!(role.max_parallel_requests, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_fields_are_rejected_and_change_nothing() {
    let host = TestHost::new();
    host.try_write_role("dev", &role_with_models(&["gpt-4o-mini"]))
        .await
        .value();
    let before = host.try_read_role("dev").await.value();

    let cases: Vec<(RoleRequest, &str)> = vec![
        (
            RoleRequest {
                max_budget: Some(-1.0),
                ..role_request()
            },
            "max_budget",
        ),
        (
            RoleRequest {
                max_budget: Some(f64::NAN),
                ..role_request()
            },
            "max_budget",
        ),
        (
            RoleRequest {
                max_budget: Some(f64::INFINITY),
                ..role_request()
            },
            "max_budget",
        ),
        (
            RoleRequest {
                budget_duration: Some("soon".into()),
                ..role_request()
            },
            "budget_duration",
        ),
        (
            RoleRequest {
                budget_duration: Some("0d".into()),
                ..role_request()
            },
            "budget_duration",
        ),
        (
            RoleRequest {
                budget_duration: Some("60".into()),
                ..role_request()
            },
            "budget_duration",
        ),
        (
            RoleRequest {
                budget_duration: Some("1.5h".into()),
                ..role_request()
            },
            "budget_duration",
        ),
        (
            RoleRequest {
                models: Some(vec!["".into()]),
                ..role_request()
            },
            "models",
        ),
        (
            RoleRequest {
                models: Some(vec![" gpt".into()]),
                ..role_request()
            },
            "models",
        ),
        (
            RoleRequest {
                models: Some(vec!["a".into(), "a".into()]),
                ..role_request()
            },
            "models",
        ),
        (
            RoleRequest {
                models: Some(vec!["x\ny".into()]),
                ..role_request()
            },
            "models",
        ),
        (
            RoleRequest {
                ttl: Some("2h".into()),
                max_ttl: Some("1h".into()),
                ..role_request()
            },
            "ttl",
        ),
        (
            RoleRequest {
                max_ttl: Some("800h".into()),
                ..role_request()
            },
            "max_ttl",
        ),
        (
            RoleRequest {
                ttl: Some("800h".into()),
                ..role_request()
            },
            "ttl",
        ),
    ];
    for (request, field) in cases {
        let error = host.try_write_role("dev", &request).await.error();
        let message = invalid_input(&error);
        assert!(
            message.contains(field),
            "message {message:?} does not name {field}"
        );
    }

    let after = host.try_read_role("dev").await.value();
    assert_eq!(after.models, before.models);
    assert_eq!(after.max_budget, before.max_budget);
    assert_eq!(after.ttl, before.ttl);
}

#[tokio::test(flavor = "multi_thread")]
async fn budget_duration_accepts_litellm_syntax() {
    let host = TestHost::new();
    for period in [
        "30s", "15m", "1h", "7d", "2w", "1mo", "hourly", "daily", "weekly", "monthly",
    ] {
        let request = RoleRequest {
            budget_duration: Some(period.into()),
            ..role_with_models(&["m"])
        };
        let role = host.try_write_role("b", &request).await.value().role;
        assert_eq!(role.budget_duration.as_deref(), Some(period));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ttl_above_max_ttl_is_rejected_either_order() {
    let host = TestHost::new();
    let request = RoleRequest {
        ttl: Some("1h".into()),
        max_ttl: Some("2h".into()),
        ..role_with_models(&["m"])
    };
    host.try_write_role("t", &request).await.value();

    let lower_max = RoleRequest {
        max_ttl: Some("30m".into()),
        ..role_request()
    };
    let error = host.try_write_role("t", &lower_max).await.error();
    assert!(invalid_input(&error).contains("ttl (1h0m0s) exceeds max_ttl (30m0s)"));
    assert_eq!(host.try_read_role("t").await.value().max_ttl, 7200);
}

/// C13: TTL values of zero, empty, negative or unparsable.
#[tokio::test(flavor = "multi_thread")]
async fn c13_ttl_zero_empty_negative_unparsable() {
    let host = TestHost::new();
    let accepted_as_default = ["0", "", "0s"];
    for ttl in accepted_as_default {
        let request = RoleRequest {
            ttl: Some(ttl.into()),
            max_ttl: Some("2h".into()),
            ..role_with_models(&["gpt-4o-mini"])
        };
        let role = host.try_write_role("t1", &request).await.value().role;
        assert_eq!(role.ttl, 0, "ttl {ttl:?} must mean the default");
        assert_eq!(role.max_ttl, 7200);
    }

    for ttl in ["-5", "-1", "banana", "1x", "1mo", "1.5.2h", "h"] {
        let request = RoleRequest {
            ttl: Some(ttl.into()),
            max_ttl: Some("2h".into()),
            ..role_with_models(&["gpt-4o-mini"])
        };
        let error = host.try_write_role("t2", &request).await.error();
        let message = invalid_input(&error);
        assert!(message.contains("ttl"), "{message}");
        assert!(
            message.contains(&format!("{ttl:?}")),
            "{message} does not quote {ttl:?}"
        );
    }
    assert!(not_found(&host.try_read_role("t2").await.error()).contains("t2"));

    let seconds = RoleRequest {
        ttl: Some("3600".into()),
        ..role_with_models(&["m"])
    };
    let units = RoleRequest {
        ttl: Some("1h".into()),
        ..role_with_models(&["m"])
    };
    let go_style = RoleRequest {
        ttl: Some("30m1800s".into()),
        ..role_with_models(&["m"])
    };
    assert_eq!(
        host.try_write_role("a", &seconds).await.value().role.ttl,
        3600
    );
    assert_eq!(
        host.try_write_role("b", &units).await.value().role.ttl,
        3600
    );
    assert_eq!(
        host.try_write_role("c", &go_style).await.value().role.ttl,
        3600
    );

    for max_ttl in ["-5", "-1", "banana", "1x", "1mo"] {
        let request = RoleRequest {
            max_ttl: Some(max_ttl.into()),
            ..role_with_models(&["m"])
        };
        let error = host.try_write_role("t3", &request).await.error();
        assert!(invalid_input(&error).contains("max_ttl"));
    }
    for max_ttl in ["0", "", "0s"] {
        let request = RoleRequest {
            max_ttl: Some(max_ttl.into()),
            ..role_with_models(&["m"])
        };
        assert_eq!(
            host.try_write_role("t4", &request)
                .await
                .value()
                .role
                .max_ttl,
            0
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fractional_and_sub_second_durations() {
    let host = TestHost::new();
    let fractional = RoleRequest {
        ttl: Some("1.5h".into()),
        ..role_with_models(&["m"])
    };
    assert_eq!(
        host.try_write_role("f", &fractional).await.value().role.ttl,
        5400
    );

    let millis = RoleRequest {
        ttl: Some("1500ms".into()),
        ..role_with_models(&["m"])
    };
    let error = host.try_write_role("f", &millis).await.error();
    assert!(invalid_input(&error).contains("whole number of seconds"));

    let days = RoleRequest {
        ttl: Some("1d".into()),
        max_ttl: Some("2d".into()),
        ..role_with_models(&["m"])
    };
    let role = host.try_write_role("f", &days).await.value().role;
    assert_eq!((role.ttl, role.max_ttl), (86_400, 172_800));
}

/// C03: key_alias characters that LiteLLM rejects.
#[tokio::test(flavor = "multi_thread")]
async fn c03_alias_prefix_rejected_at_role_write() {
    let host = TestHost::new();
    let rejected = [
        "team a".to_owned(),
        "../other".to_owned(),
        "team-a\u{0}x".to_owned(),
        "équipe-ü".to_owned(),
        "team-a/svc@example.com".to_owned(),
        "a".repeat(300),
        "-leading-dash".to_owned(),
        "a..b".to_owned(),
        String::new(),
    ];
    for (index, prefix) in rejected.iter().enumerate() {
        let name = format!("r{index}");
        let request = RoleRequest {
            key_alias_prefix: Some(prefix.clone()),
            ..role_with_models(&["gpt-4o-mini"])
        };
        let error = host.try_write_role(&name, &request).await.error();
        let message = invalid_input(&error);
        assert!(message.contains("key_alias_prefix"), "{message}");
        assert!(
            message.contains("1 to 64 ASCII letters, digits, '.', '_' and '-'"),
            "{message}"
        );
        host.try_read_role(&name).await.error();
    }
    assert!(host.try_list_roles().await.value().is_empty());

    for prefix in ["team-a", "svc.example.com", "A_1", "vault"] {
        let request = RoleRequest {
            key_alias_prefix: Some(prefix.into()),
            ..role_with_models(&["gpt-4o-mini"])
        };
        let role = host.try_write_role("ok", &request).await.value().role;
        assert_eq!(role.key_alias_prefix, prefix);
    }
}

/// C10: role metadata that is not a JSON object.
#[tokio::test(flavor = "multi_thread")]
async fn c10_metadata_must_be_object() {
    let host = TestHost::new();
    for (name, metadata) in [
        ("m1", r#"["a","b"]"#),
        ("m2", r#""team=a""#),
        ("m5", "12"),
        ("m6", "{"),
    ] {
        let request = RoleRequest {
            metadata: Some(metadata.into()),
            ..role_with_models(&["gpt-4o-mini"])
        };
        let error = host.try_write_role(name, &request).await.error();
        assert!(
            invalid_input(&error).contains("metadata must be a JSON object"),
            "{error:?}"
        );
    }

    let nested = r#"{"team":"a","cost_center":1234,"tags":["x"],"nested":{"k":true}}"#;
    let request = RoleRequest {
        metadata: Some(nested.into()),
        ..role_with_models(&["gpt-4o-mini"])
    };
    host.try_write_role("m3", &request).await.value();
    assert_eq!(host.try_read_role("m3").await.value().metadata, nested);

    let request = RoleRequest {
        metadata: Some("null".into()),
        ..role_with_models(&["gpt-4o-mini"])
    };
    host.try_write_role("m4", &request).await.value();
    assert_eq!(host.try_read_role("m4").await.value().metadata, "{}");

    let reserved = r#"{"secrets_engine_role":"other"}"#;
    let request = RoleRequest {
        metadata: Some(reserved.into()),
        ..role_with_models(&["m"])
    };
    let error = host.try_write_role("m7", &request).await.error();
    assert!(invalid_input(&error).contains("reserved"));
}

/// C18: role names with case differences, slashes or non-ASCII.
#[tokio::test(flavor = "multi_thread")]
async fn c18_role_name_rule_on_every_path() {
    let host = TestHost::new();
    host.try_write_role("Dev", &role_with_models(&["m-upper"]))
        .await
        .value();
    host.try_write_role("dev", &role_with_models(&["m-lower"]))
        .await
        .value();
    assert_eq!(host.try_list_roles().await.value(), ["Dev", "dev"]);
    assert_eq!(host.try_read_role("Dev").await.value().models, ["m-upper"]);
    assert_eq!(host.try_read_role("dev").await.value().models, ["m-lower"]);

    let long = "a".repeat(300);
    for name in [
        "a/b",
        "a%2Fb",
        "café",
        "",
        long.as_str(),
        "_x",
        "a b",
        "a.b",
        "..",
        "a\u{0}",
    ] {
        let error = host
            .try_write_role(name, &role_with_models(&["m"]))
            .await
            .error();
        assert!(
            invalid_input(&error).contains("role name is invalid"),
            "{name:?}: {error:?}"
        );
        let read = host.try_read_role(name).await.error();
        invalid_input(&read);
        let delete = host.try_delete_role(name).await.error();
        invalid_input(&delete);
        let creds = host.try_issue_credential(name, None).await.error();
        invalid_input(&creds);
    }

    host.try_write_role("a_b", &role_with_models(&["one"]))
        .await
        .value();
    host.try_write_role("a-b", &role_with_models(&["two"]))
        .await
        .value();
    assert_eq!(host.try_read_role("a_b").await.value().models, ["one"]);
    assert_eq!(host.try_read_role("a-b").await.value().models, ["two"]);

    let longest = "r".repeat(128);
    host.try_write_role(&longest, &role_with_models(&["m"]))
        .await
        .value();
    assert_eq!(host.try_read_role(&longest).await.value().name, longest);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_role_is_idempotent() {
    let host = TestHost::new();
    host.try_write_role("x", &role_with_models(&["m"]))
        .await
        .value();
    host.try_delete_role("x").await.value();
    host.try_delete_role("x").await.value();
    let error = host.try_read_role("x").await.error();
    assert_eq!(not_found(&error), "role x not found");
}

/// C19: LIST on empty storage (the engine returns an empty list; the HTTP layer maps it).
#[tokio::test(flavor = "multi_thread")]
async fn c19_list_roles_empty_after_delete() {
    let host = TestHost::new();
    assert!(host.try_list_roles().await.value().is_empty());

    host.try_write_role("x", &role_with_models(&["m"]))
        .await
        .value();
    host.try_delete_role("x").await.value();
    assert!(host.try_list_roles().await.value().is_empty());

    host.try_write_role("b", &role_with_models(&["m"]))
        .await
        .value();
    host.try_write_role("a", &role_with_models(&["m"]))
        .await
        .value();
    assert_eq!(host.try_list_roles().await.value(), ["a", "b"]);
}

/// C28: a role index keeps role listing from reading leases; metadata has a size limit.
#[tokio::test(flavor = "multi_thread")]
async fn c28_list_roles_reads_no_leases() {
    let host = TestHost::new();
    for name in ["r1", "r2", "r3"] {
        host.try_write_role(name, &role_with_models(&["m"]))
            .await
            .value();
    }
    for index in 0..2000 {
        host.kv.put_text(&format!("lease/r1/{index:032x}"), "{}");
    }

    host.kv.take_reads();
    assert_eq!(host.try_list_roles().await.value(), ["r1", "r2", "r3"]);
    let reads = host.kv.take_reads();
    assert!(
        reads.iter().all(|key| !key.starts_with("lease/")),
        "{reads:?}"
    );
    assert!(
        reads.len() <= 4,
        "listing 3 roles read {} keys: {reads:?}",
        reads.len()
    );

    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(900 * 1024));
    let request = RoleRequest {
        metadata: Some(big),
        ..role_with_models(&["m"])
    };
    let error = host.try_write_role("big", &request).await.error();
    assert!(invalid_input(&error).contains("64 KiB"));

    let at_limit = format!(r#"{{"blob":"{}"}}"#, "x".repeat(64 * 1024 - 12));
    let request = RoleRequest {
        metadata: Some(at_limit),
        ..role_with_models(&["m"])
    };
    host.try_write_role("fits", &request).await.value();
}

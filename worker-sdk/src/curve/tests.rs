use super::*;

#[test]
fn libzmq_is_built_with_curve() {
    // third_party/zmq-sys links libsodium; without it zmq::has("curve") is Some(false).
    assert_eq!(zmq::has("curve"), Some(true));
    assert!(available());
}

#[test]
fn key_files_round_trip_and_the_secret_file_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, secret_path, public_path) = write_key_pair(&dir.path().join("svc")).unwrap();
    assert_eq!(secret_path, dir.path().join("svc.key"));
    assert_eq!(public_path, dir.path().join("svc.pub"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let read = KeyPair::read(&secret_path).unwrap();
    assert_eq!(
        read.public, keys.public,
        "the public key derives from the secret"
    );
    assert_eq!(read_public_key(&public_path).unwrap(), keys.public);
    assert_eq!(
        std::fs::read_to_string(&public_path).unwrap().trim().len(),
        Z85_LEN
    );
    assert!(
        matches!(
            write_key_pair(&dir.path().join("svc")),
            Err(CurveError::Io { .. })
        ),
        "never overwrites a key"
    );
}

#[test]
fn secrets_never_print() {
    let keys = KeyPair::generate().unwrap();
    let secret_z85 = zmq::z85_encode(keys.secret.expose()).unwrap();
    let client = ClientCurve::new(KeyPair::generate().unwrap(), keys.public);
    for shown in [
        format!("{keys:?}"),
        format!("{:?}", keys.secret),
        format!("{client:?}"),
        format!("{:?}", ServerCurve::new(keys)),
    ] {
        assert!(!shown.contains(&secret_z85), "{shown}");
        assert!(!shown.is_empty());
    }
}

#[test]
fn bad_keys_are_refused_without_echoing_them() {
    for bad in [
        "",
        "short",
        &"x".repeat(41),
        &"~".repeat(40),
        &"\u{e9}".repeat(20),
    ] {
        let e = PublicKey::from_z85(bad, "curve.server_key").unwrap_err();
        assert!(matches!(e, CurveError::InvalidKey { .. }), "{bad:?}");
        assert!(e.to_string().contains("curve.server_key"));
    }
}

#[test]
fn config_is_all_or_nothing_and_prints_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (client, secret_path, _) = write_key_pair(&dir.path().join("client")).unwrap();
    let (server, _, server_pub) = write_key_pair(&dir.path().join("broker")).unwrap();

    assert!(CurveConfig::default().client().unwrap().is_none(), "off");
    let only_secret = CurveConfig {
        secret_key_file: Some(secret_path.clone()),
        ..Default::default()
    };
    assert!(matches!(
        only_secret.client(),
        Err(CurveError::Incomplete(_))
    ));
    let only_server = CurveConfig {
        server_key: Some(server.public.to_z85()),
        ..Default::default()
    };
    assert!(matches!(
        only_server.client(),
        Err(CurveError::Incomplete(_))
    ));

    for config in [
        CurveConfig {
            secret_key_file: Some(secret_path.clone()),
            server_key: Some(server.public.to_z85()),
            server_key_file: None,
        },
        CurveConfig {
            secret_key_file: Some(secret_path.clone()),
            server_key: None,
            server_key_file: Some(server_pub.clone()),
        },
    ] {
        let curve = config.client().unwrap().expect("on");
        assert_eq!(curve.public_key(), client.public);
        assert_eq!(curve.server_key(), server.public);
        let printed = serde_json::to_string(&config).unwrap();
        let secret = std::fs::read_to_string(&secret_path).unwrap();
        assert!(!printed.contains(secret.trim()), "{printed}");
        assert!(
            printed.contains("client.key"),
            "the path is shown: {printed}"
        );
    }
}

/// A CURVE server with a ZAP handler admitting one key: the client's messages carry the
/// `User-Id` the handler gave, and a wrong key is refused.
#[test]
fn user_id_is_what_the_zap_handler_returned() {
    let context = zmq::Context::new();
    let server_keys = KeyPair::generate().unwrap();
    let server_public = server_keys.public;
    let client_keys = KeyPair::generate().unwrap();
    let allowed = client_keys.public;

    let zap = context.socket(zmq::REP).unwrap();
    zap.bind("inproc://zeromq.zap.01").unwrap();
    let handler = std::thread::spawn(move || {
        // One request: [version, id, domain, address, identity, mechanism, key].
        let request = zap.recv_multipart(0).unwrap();
        let key = PublicKey::from_bytes(request[6].clone().try_into().unwrap());
        let ok = key == allowed && request[2] == b"test";
        let (code, user) = if ok {
            ("200", key.to_z85())
        } else {
            ("400", String::new())
        };
        zap.send_multipart(
            [
                b"1.0".to_vec(),
                request[1].clone(),
                code.as_bytes().to_vec(),
                b"".to_vec(),
                user.into_bytes(),
                b"".to_vec(),
            ],
            0,
        )
        .unwrap();
    });

    let mut router = context.socket(zmq::ROUTER).unwrap();
    ServerCurve::new(server_keys)
        .apply(&mut router, "test")
        .unwrap();
    router.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = router.get_last_endpoint().unwrap().unwrap();

    let dealer = context.socket(zmq::DEALER).unwrap();
    ClientCurve::new(client_keys, server_public)
        .apply(&dealer)
        .unwrap();
    dealer.connect(&endpoint).unwrap();
    dealer.send("hello", 0).unwrap();
    let mut frames = Vec::new();
    crate::protocol::recv_frames_into(&router, 0, &mut frames).unwrap();
    assert_eq!(&frames[1][..], b"hello");
    assert_eq!(user_id(&frames[0]), Some(allowed.to_z85().as_str()));
    assert_eq!(user_id(&frames[1]), Some(allowed.to_z85().as_str()));
    handler.join().unwrap();

    let plain = Frame::from("no metadata");
    assert_eq!(user_id(&plain), None);
}

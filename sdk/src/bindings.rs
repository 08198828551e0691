//! The standard interfaces the SDK imports besides `wasi:http` (which the `wasi` crate brings),
//! generated from the one copy of the WIT files in `modules/wit`.
//!
//! Both keyvalue drafts are imported: everyday operations use `0.2.0-draft`, which `wasmtime
//! serve` also links, and only compare-and-swap uses `0.2.0-draft2`. The linker drops imports a
//! service never calls, so a service that does not use `Bucket::update` runs on hosts without
//! draft2. The same holds for `wasi:blobstore` (0.2.0-draft, what wasmCloud links): only a
//! service that uses [`crate::blob`] imports it.

wit_bindgen::generate!({
    inline: "
        package doppel:sdk;
        world guest {
            import wasi:keyvalue/store@0.2.0-draft;
            import wasi:keyvalue/atomics@0.2.0-draft;
            import wasi:keyvalue/batch@0.2.0-draft;
            import wasi:keyvalue/store@0.2.0-draft2;
            import wasi:keyvalue/atomics@0.2.0-draft2;
            import wasi:config/store@0.2.0-rc.1;
            import wasi:logging/logging@0.1.0-draft;
            import wasi:blobstore/blobstore@0.2.0-draft;
        }
    ",
    path: [
        "../modules/wit/keyvalue-draft",
        "../modules/wit/keyvalue-draft2",
        "../modules/wit/config",
        "../modules/wit/logging",
        "../modules/wit/blobstore",
    ],
    // Streams are the `wasi` crate's, so that a blob's reader and writer are the same types as
    // a request's and a response's body.
    with: {
        "wasi:io/streams@0.2.1": ::wasi::io::streams,
        "wasi:io/error@0.2.1": ::wasi::io::error,
        "wasi:io/poll@0.2.1": ::wasi::io::poll,
    },
    generate_all,
});

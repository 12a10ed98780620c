//! A dependency exporting `kiloclaw-test:greeter/greet`; it reads a variable and bumps a
//! key-value counter, both through its parent's configuration.

use spin_sdk::wit::wasi::keyvalue::{atomics, store};

wit_bindgen::generate!({
    inline: "
        package kiloclaw-test:greeter@0.1.0;
        interface greet { hello: func(name: string) -> string; }
        world exporter { export greet; }
    ",
    world: "exporter",
});

struct Greeter;

impl exports::kiloclaw_test::greeter::greet::Guest for Greeter {
    fn hello(name: String) -> String {
        let greeting = spin_sdk::variables::get("greeting").unwrap_or_else(|e| format!("<{e:?}>"));
        let count = store::open("default")
            .and_then(|b| atomics::increment(&b, "greet-count", 1))
            .map(|n| n.to_string())
            .unwrap_or_else(|e| format!("<{e:?}>"));
        format!("{greeting}, {name}! (#{count})")
    }
}

export!(Greeter);

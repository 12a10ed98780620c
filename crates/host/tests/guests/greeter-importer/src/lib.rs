//! An HTTP guest that imports `kiloclaw-test:greeter/greet`, satisfied by composition.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

wit_bindgen::generate!({
    inline: "
        package kiloclaw-test:greeter@0.1.0;
        interface greet { hello: func(name: string) -> string; }
        world importer { import greet; }
    ",
    world: "importer",
});

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let name = req
        .query()
        .strip_prefix("name=")
        .unwrap_or("world")
        .to_string();
    let greeting = kiloclaw_test::greeter::greet::hello(&name);
    Ok(Response::builder().status(200).body(greeting).build())
}

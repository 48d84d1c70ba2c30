//! Prints the service's OpenAPI 3 document (the same one `GET /api/openapi.json` serves).
fn main() {
    match tollgate_server::api::openapi().to_pretty_json() {
        Ok(text) => println!("{text}"),
        Err(e) => {
            eprintln!("cannot render the OpenAPI document: {e}");
            std::process::exit(1);
        }
    }
}

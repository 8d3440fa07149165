use lambda_http::{Error, Request, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = &web_console::ConsoleConfig::from_env()?;
    run(service_fn(move |event: Request| async move { Ok::<_, Error>(web_console::respond(config, &event)) })).await
}

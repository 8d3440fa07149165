use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let (clients, resources, config) = segments_aws::from_env().await?;
    let data =
        segments_aws::account_data(&clients, &resources.account_table, &segments_aws::segments_table_from_env()?);
    let import_queue = segments_aws::SqsImportQueue::url_from_env()?;
    let imports = segments_aws::imports_api(&clients, &resources, &import_queue);
    run(service_fn(|event| data_api::handle_all(&data, &imports, &config, event))).await
}

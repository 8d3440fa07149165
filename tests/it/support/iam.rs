//! The functions' IAM roles as `infra/template.yaml` writes them, enforced by moto: a moto server
//! that checks every request against the caller's IAM policies, the service's resources
//! provisioned on it, and per function an IAM user holding that function's policy, with the SDK
//! clients and resource names the function would have on AWS.
//!
//! A role's policy is read from the template (loops expanded) and resolved against the moto
//! resources: `!Ref`, `!GetAtt … .Arn`/`.QueueName` and `!Sub "${X.Arn}/…"` of the template's
//! tables, bucket, queues and event bus become their names, URLs and ARNs
//! (`${JobsTable.Arn}/index/…` an index's ARN); `!Ref` of a parameter becomes its default. The
//! function's environment (Globals and its own variables) is resolved the same way, and the
//! [`AwsResources`] a test wires the function with is read from it as `AwsResources::from_env`
//! reads the real one: a variable missing from the template is missing in the test.
//!
//! ```ignore
//! let stack = IamStack::start().await;
//! let role = stack.role("CreateJobFunction");
//! let identity = stack.identity("create-job", &role, &role.policy).await;
//! let intake = segments_aws::intake(&identity.clients, &identity.resources()?, config);
//! ```

use std::collections::BTreeMap;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::config::Credentials;
use segments_aws::provision::{self, ServiceResources};
use segments_aws::{
    ACCOUNT_DATA_TABLE_VAR, AwsClients, AwsResources, JOBS_TABLE_VAR, RESULTS_BUCKET_VAR, SegmentsResources,
};
use segments_core::domain::SegmentType;
use serde_json::{Map, Value, json};

use super::moto::{MotoServer, REGION};
use super::template::sam_template;

/// The requests moto lets through unchecked: creating the administrator, its policy and its
/// access key. Everything after is signed and checked, the provisioning included.
const BOOTSTRAP_REQUESTS: u32 = 3;
const ADMIN_USER: &str = "provisioner";
/// The resource name prefix of the provisioned service.
const PREFIX: &str = "iam";
const MAX_RECEIVE_COUNT: u32 = 5;

/// What a template reference stands for on the moto server.
#[derive(Debug, Clone)]
struct Physical {
    /// `!Ref`: a table's or bucket's name, a queue's URL.
    reference: String,
    /// `!GetAtt X.<attribute>`.
    attributes: BTreeMap<&'static str, String>,
}

/// A moto server with IAM enforced and the service's resources, created by an administrator.
pub struct IamStack {
    pub server: MotoServer,
    /// Clients of the administrator (every action allowed): for preparing and inspecting state.
    pub admin: AwsClients,
    pub service: ServiceResources,
    /// The Segments table, the event bus and the refresh queue of the segments functions.
    pub segments: SegmentsResources,
    iam: aws_sdk_iam::Client,
    physical: BTreeMap<String, Physical>,
    template: Value,
}

/// A function of the template: its role's policy and its environment, resolved.
#[derive(Debug, Clone)]
pub struct FunctionRole {
    pub logical_id: String,
    /// `{"Version": …, "Statement": [...]}`: every statement of every policy of the function.
    pub policy: Value,
    pub env: BTreeMap<String, String>,
}

impl FunctionRole {
    /// The statements of [`FunctionRole::policy`].
    pub fn statements(&self) -> &[Value] {
        self.policy["Statement"].as_array().expect("a policy has statements")
    }

    /// The policy without its statement number `index`.
    pub fn policy_without(&self, index: usize) -> Value {
        let mut statements = self.statements().to_vec();
        statements.remove(index);
        json!({"Version": "2012-10-17", "Statement": statements})
    }

    /// The resource names the function reads at start, from its environment, as
    /// `AwsResources::from_env` reads them: the error names a missing variable.
    pub fn resources(&self) -> Result<AwsResources, String> {
        let required = |name: &str| self.env.get(name).cloned().ok_or_else(|| format!("{name} is not set"));
        let queue_urls = SegmentType::ALL
            .iter()
            .filter_map(|&t| self.env.get(&AwsResources::queue_url_var(t)).map(|url| (t, url.clone())))
            .collect();
        Ok(AwsResources {
            account_table: required(ACCOUNT_DATA_TABLE_VAR)?,
            jobs_table: required(JOBS_TABLE_VAR)?,
            results_bucket: required(RESULTS_BUCKET_VAR)?,
            queue_urls,
        })
    }

    /// A variable of the function's environment; panics naming it when the template sets none.
    pub fn var(&self, name: &str) -> String {
        self.env.get(name).cloned().unwrap_or_else(|| panic!("{}: {name} is not set", self.logical_id))
    }
}

/// An IAM user holding one policy, and clients signed with its access key.
pub struct Identity {
    pub access_key_id: String,
    pub clients: AwsClients,
}

impl IamStack {
    /// Starts the server, creates the administrator and provisions the service with it.
    pub async fn start() -> IamStack {
        let server = MotoServer::start_with_iam(BOOTSTRAP_REQUESTS);
        let bootstrap = aws_sdk_iam::Client::new(&server.sdk_config().await);
        let (admin_key, admin_secret) = create_user(
            &bootstrap,
            ADMIN_USER,
            &json!({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]
            }),
        )
        .await;
        let admin_config = signed_config(&server, &admin_key, &admin_secret).await;
        let admin = AwsClients::from_sdk_config(&admin_config);
        let iam = aws_sdk_iam::Client::new(&admin_config);
        let service = provision::provision_service(&admin, PREFIX, MAX_RECEIVE_COUNT)
            .await
            .expect("the administrator provisions the service")
            .service;
        let segments = service.segments();
        let physical = physical_resources(&admin, &service, &segments).await;
        IamStack { server, admin, service, segments, iam, physical, template: sam_template() }
    }

    /// The function `logical_id` of the template, resolved against this server's resources.
    pub fn role(&self, logical_id: &str) -> FunctionRole {
        let function = &self.template["Resources"][logical_id];
        assert_eq!(function["Type"], "AWS::Serverless::Function", "{logical_id} is not a function of the template");
        let properties = &function["Properties"];
        let mut statements = Vec::new();
        for policy in properties["Policies"].as_array().into_iter().flatten() {
            match policy.get("Statement") {
                Some(Value::Array(list)) => {
                    statements.extend(list.iter().map(|s| self.resolve(s).expect("a statement")))
                }
                // SAM policy templates (DynamoDBCrudPolicy, …) and managed policy names: the
                // template uses none; expand one here from SAM's policy_templates.json before
                // the template does.
                _ => panic!("{logical_id}: policy {policy} is not an inline policy document"),
            }
        }
        let mut env = BTreeMap::new();
        let globals = &self.template["Globals"]["Function"]["Environment"]["Variables"];
        for variables in [globals, &properties["Environment"]["Variables"]] {
            for (name, value) in variables.as_object().into_iter().flatten() {
                match self.resolve(value) {
                    Some(Value::String(s)) => {
                        env.insert(name.clone(), s);
                    }
                    Some(other) => panic!("{logical_id}: {name} resolves to {other}, not a string"),
                    None => {
                        env.remove(name);
                    }
                }
            }
        }
        FunctionRole {
            logical_id: logical_id.to_owned(),
            policy: json!({"Version": "2012-10-17", "Statement": statements}),
            env,
        }
    }

    /// Subscribes a new queue to every event of the service on the stack's bus (a rule matching
    /// the service's `source`), as a bank's subscriber would.
    pub async fn watch_events(&self) -> EventWatch {
        let name = format!("{PREFIX}-event-watch");
        let created = self.admin.sqs.create_queue().queue_name(&name).send().await.expect("the watch queue");
        let queue_url = created.queue_url.expect("a queue URL");
        let queue_arn = self
            .admin
            .sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("the watch queue's attributes")
            .attributes
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn).cloned())
            .expect("a queue ARN");
        let bus = &self.segments.event_bus;
        let pattern = json!({"source": [segments_core::domain::events::EVENT_SOURCE]});
        let eventbridge = &self.admin.eventbridge;
        let rule = eventbridge.put_rule().name(&name).event_bus_name(bus).event_pattern(pattern.to_string());
        rule.send().await.expect("the watch rule");
        let target = aws_sdk_eventbridge::types::Target::builder().id(&name).arn(queue_arn).build().expect("a target");
        let targets = eventbridge.put_targets().rule(&name).event_bus_name(bus).targets(target).send().await;
        let failed = targets.expect("the watch rule's target").failed_entry_count;
        assert_eq!(failed, 0, "the watch queue is a target of the rule");
        EventWatch { queue_url }
    }

    /// What `!Ref logical_id` stands for here: a table's or bucket's name, a queue's URL.
    pub fn physical_reference(&self, logical_id: &str) -> String {
        self.physical.get(logical_id).unwrap_or_else(|| panic!("{logical_id}: not provisioned")).reference.clone()
    }

    /// What `!GetAtt logical_id.Arn` stands for here.
    pub fn arn(&self, logical_id: &str) -> String {
        self.attribute(&json!([logical_id, "Arn"]))
    }

    /// A new IAM user `user` holding `policy` as its only policy, and clients with its key.
    pub async fn identity(&self, user: &str, policy: &Value) -> Identity {
        let (key, secret) = create_user(&self.iam, user, policy).await;
        let clients = AwsClients::from_sdk_config(&signed_config(&self.server, &key, &secret).await);
        Identity { access_key_id: key, clients }
    }

    /// What the server refused to `identity` so far.
    pub async fn refused(&self, identity: &Identity) -> Vec<super::moto::Denial> {
        self.server.denials().await.into_iter().filter(|d| d.access_key_id == identity.access_key_id).collect()
    }

    /// A template value with the references to this server's resources resolved; `None` for
    /// `AWS::NoValue`. Conditions are evaluated for a stack without a custom domain.
    fn resolve(&self, value: &Value) -> Option<Value> {
        match value {
            Value::Array(items) => Some(Value::Array(items.iter().filter_map(|v| self.resolve(v)).collect())),
            Value::Object(map) if map.len() == 1 => {
                let (key, argument) = map.iter().next().expect("one entry");
                match key.as_str() {
                    "Ref" => self.reference(argument.as_str().expect("Ref names a resource")),
                    "Fn::GetAtt" => Some(Value::String(self.attribute(argument))),
                    "Fn::Sub" => Some(Value::String(self.substitute(argument.as_str().expect("a literal Fn::Sub")))),
                    "Fn::If" => {
                        let [condition, _when_true, when_false] =
                            argument.as_array().expect("Fn::If's list").as_slice()
                        else {
                            panic!("Fn::If takes three values: {argument}")
                        };
                        assert_eq!(condition, "HasCustomDomain", "only the custom-domain condition is known here");
                        self.resolve(when_false)
                    }
                    _ => Some(Value::Object(self.resolve_entries(map))),
                }
            }
            Value::Object(map) => Some(Value::Object(self.resolve_entries(map))),
            other => Some(other.clone()),
        }
    }

    fn resolve_entries(&self, map: &Map<String, Value>) -> Map<String, Value> {
        map.iter().filter_map(|(k, v)| self.resolve(v).map(|v| (k.clone(), v))).collect()
    }

    /// A resource's name or URL; a parameter's default, as a stack deployed without overrides has it.
    fn reference(&self, name: &str) -> Option<Value> {
        if name == "AWS::NoValue" {
            return None;
        }
        if let Some(physical) = self.physical.get(name) {
            return Some(Value::String(physical.reference.clone()));
        }
        match &self.template["Parameters"][name]["Default"] {
            Value::String(text) => Some(Value::String(text.clone())),
            Value::Number(number) => Some(Value::String(number.to_string())),
            _ => panic!("!Ref {name}: neither a provisioned resource nor a parameter with a default"),
        }
    }

    fn attribute(&self, argument: &Value) -> String {
        let (resource, attribute) = match argument {
            Value::Array(parts) => (
                parts[0].as_str().expect("a logical id").to_owned(),
                parts[1].as_str().expect("an attribute").to_owned(),
            ),
            Value::String(dotted) => {
                let (r, a) = dotted.split_once('.').expect("!GetAtt X.Attribute");
                (r.to_owned(), a.to_owned())
            }
            other => panic!("!GetAtt {other}"),
        };
        let physical = self.physical.get(&resource).unwrap_or_else(|| panic!("!GetAtt {resource}: not provisioned"));
        physical
            .attributes
            .get(attribute.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("!GetAtt {resource}.{attribute}: unknown attribute"))
    }

    /// `${X}` and `${X.Attribute}` replaced; anything else (`${AWS::Region}`, parameters) panics.
    fn substitute(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').map(|e| start + e).expect("a closed ${…}");
            let name = &rest[start + 2..end];
            let value = if name.contains('.') {
                self.attribute(&Value::String(name.to_owned()))
            } else {
                self.reference(name).and_then(|v| v.as_str().map(str::to_owned)).expect("a string")
            };
            out.push_str(&value);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// Creates `user` with `policy` as its inline policy and an access key: (key id, secret).
async fn create_user(iam: &aws_sdk_iam::Client, user: &str, policy: &Value) -> (String, String) {
    iam.create_user().user_name(user).send().await.unwrap_or_else(|e| panic!("creating {user}: {e:?}"));
    iam.put_user_policy()
        .user_name(user)
        .policy_name(format!("{user}-role"))
        .policy_document(policy.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("the policy of {user}: {e:?}"));
    let key = iam
        .create_access_key()
        .user_name(user)
        .send()
        .await
        .unwrap_or_else(|e| panic!("an access key of {user}: {e:?}"))
        .access_key
        .expect("an access key");
    (key.access_key_id, key.secret_access_key)
}

/// An SDK configuration for the server, signed with an access key.
async fn signed_config(server: &MotoServer, key: &str, secret: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .empty_test_environment()
        .endpoint_url(server.endpoint())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(key, secret, None, None, "moto-iam"))
        .load()
        .await
}

/// The template's logical ids of the provisioned resources, with their names, URLs and ARNs as
/// the server reports them.
async fn physical_resources(
    admin: &AwsClients,
    service: &ServiceResources,
    segments: &SegmentsResources,
) -> BTreeMap<String, Physical> {
    let mut physical = BTreeMap::new();
    let resources = &service.resources;
    for (logical, table) in [
        ("AccountDataTable", &resources.account_table),
        ("JobsTable", &resources.jobs_table),
        ("SegmentsTable", &service.segments_table),
    ] {
        let described = admin.dynamodb.describe_table().table_name(table).send().await.expect("the table exists");
        let arn = described.table.and_then(|t| t.table_arn).expect("a table ARN");
        physical.insert(logical.to_owned(), Physical { reference: table.clone(), attributes: [("Arn", arn)].into() });
    }
    let bucket = &resources.results_bucket;
    physical.insert(
        "ResultsBucket".to_owned(),
        Physical { reference: bucket.clone(), attributes: [("Arn", format!("arn:aws:s3:::{bucket}"))].into() },
    );
    let mut queues: Vec<(String, String)> = SegmentType::ALL
        .iter()
        .map(|&t| (pascal_case(t), provision::queue_name(PREFIX, t)))
        .map(|(type_name, queue)| (format!("{type_name}Queue"), queue))
        .collect();
    queues.push(("ImportQueue".to_owned(), provision::import_queue_name(PREFIX)));
    queues.push(("RefreshQueue".to_owned(), queue_name_of(&segments.refresh_queue_url)));
    for (logical, name) in queues {
        let dead_letters = provision::dead_letter_queue_name(&name);
        let dead_letter_logical = logical.replace("Queue", "DeadLetterQueue");
        for (logical, name) in [(logical, name), (dead_letter_logical, dead_letters)] {
            let url = admin.sqs.get_queue_url().queue_name(&name).send().await.expect("the queue exists").queue_url;
            let url = url.expect("a queue URL");
            let arn = admin
                .sqs
                .get_queue_attributes()
                .queue_url(&url)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .send()
                .await
                .expect("the queue's attributes")
                .attributes
                .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn).cloned())
                .expect("a queue ARN");
            physical.insert(
                logical,
                Physical { reference: url, attributes: [("Arn", arn), ("QueueName", name.clone())].into() },
            );
        }
    }
    let bus = &segments.event_bus;
    let described = admin.eventbridge.describe_event_bus().name(bus).send().await.expect("the event bus exists");
    let arn = described.arn.expect("an event bus ARN");
    physical
        .insert("SegmentEventBus".to_owned(), Physical { reference: bus.clone(), attributes: [("Arn", arn)].into() });
    physical
}

/// The name of the queue at `url`: its last path segment.
fn queue_name_of(url: &str) -> String {
    url.rsplit('/').next().expect("a queue URL has a path").to_owned()
}

/// The queue every segment event of the stack's bus is delivered to (a rule on the bus with an
/// SQS target), read by the administrator: the events a scenario published, as a subscriber of
/// the bus receives them.
pub struct EventWatch {
    queue_url: String,
}

impl EventWatch {
    /// The events delivered since the last call, each the JSON EventBridge delivers (`source`,
    /// `detail-type`, `detail`, …); the queue is left empty.
    pub async fn take(&self, admin: &AwsClients) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let received = admin
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .send()
                .await
                .expect("the administrator receives the watched events");
            let messages = received.messages.unwrap_or_default();
            if messages.is_empty() {
                return events;
            }
            for m in messages {
                let body = m.body.as_deref().expect("an event has a body");
                events.push(serde_json::from_str(body).unwrap_or_else(|e| panic!("an event is JSON ({e}): {body}")));
                let handle = m.receipt_handle.expect("a receipt handle");
                admin
                    .sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .expect("deleted");
            }
        }
    }
}

/// `HighBalance` for `highBalance`: the template's name of a segment type (its loops' `TypeName`).
pub fn pascal_case(segment_type: SegmentType) -> String {
    let name = segment_type.as_str();
    let mut chars = name.chars();
    chars.next().map(|first| first.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

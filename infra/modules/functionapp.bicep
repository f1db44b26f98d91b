// The Linux function app that runs the edgevault custom handler, on an Elastic Premium plan.
//
// Why Elastic Premium and not Flex Consumption: Flex Consumption takes its runtime from `functionAppConfig.runtime`
// and refuses the `FUNCTIONS_WORKER_RUNTIME` / `FUNCTIONS_EXTENSION_VERSION` app settings a custom handler is
// configured with elsewhere, its custom-handler support arrived late (2025) with tooling gaps (Core Tools publishing,
// portal creation), and it needs a blob deployment container reached with a storage role. Elastic Premium runs a
// custom handler as documented (`FUNCTIONS_WORKER_RUNTIME=custom`), keeps one instance always ready (Service Bus
// sessions and the Event Grid trigger have no cold start), scales out on queue length, and is a current plan (Linux
// Consumption is the legacy one). See infra/README.md for the cost of that choice.
//
// The app runs from the zip that `cargo xtask package` builds (dist/edgevault-app.zip), deployed with zip deploy
// (`WEBSITE_RUN_FROM_PACKAGE=1`). No Azure Files content share is configured: it would need a storage connection
// string with the account key, and shared-key access is disabled on the account.

param location string

@description('Name stem, e.g. edgevault-prod.')
param baseName string

@description('Function app name (also the default host name), globally unique.')
param appName string

@allowed([
  'EP1'
  'EP2'
  'EP3'
])
param planSku string = 'EP1'

@description('Instances kept warm; 1 is enough for edgevault (the work is I/O-bound).')
@minValue(1)
@maxValue(20)
param alwaysReadyInstances int = 1

@description('Upper bound of the scale-out.')
@minValue(1)
@maxValue(100)
param maximumElasticWorkerCount int = 10

param storageAccountName string
param serviceBusFullyQualifiedNamespace string
param appInsightsConnectionString string

@description('Subscription ids the recovery sweep covers (EDGEVAULT_SUBSCRIPTIONS).')
param subscriptionsInScope array

@description('RFC 3339 instant of the integration cut-over (EDGEVAULT_CUTOVER); empty: no device is pre-integration.')
param cutover string

@description('NCRONTAB schedule of the RecoverySweep timer (the `%RecoverySweepSchedule%` app setting).')
param recoverySweepSchedule string

@description('Operator consent to delete a device\'s vault when the device is deleted (EDGEVAULT_DELETE_VAULT_WITH_DEVICE).')
param deleteVaultWithDevice bool

@minValue(1)
@maxValue(720)
param activationKeyTtlHours int

@description('RUST_LOG filter of the handler.')
param rustLog string = 'info'

param tags object = {}

resource plan 'Microsoft.Web/serverfarms@2023-12-01' = {
  // checkov:skip=CKV_AZURE_225:Zone redundancy needs at least three always-ready instances, tripling the idle cost; edgevault keeps no state of its own (Azure and Service Bus hold it), so losing a zone delays work without losing any.
  name: 'plan-${baseName}'
  location: location
  tags: tags
  kind: 'elastic'
  sku: {
    name: planSku
    tier: 'ElasticPremium'
  }
  properties: {
    // Linux.
    reserved: true
    maximumElasticWorkerCount: maximumElasticWorkerCount
  }
}

resource site 'Microsoft.Web/sites@2023-12-01' = {
  // checkov:skip=CKV_AZURE_222:Event Grid delivers to ArmEvents and the portal calls the activation-key API over the public endpoint; the API needs a function key and the Event Grid trigger its system key.
  // checkov:skip=CKV_AZURE_212:One always-ready instance by design (see CKV_AZURE_225 on the plan); the plan scales out on load and Service Bus redelivers work an instance did not finish.
  // checkov:skip=CKV_AZURE_213:A custom handler app has no unauthenticated health endpoint the platform could probe; the host restarts the handler process itself and the alert rules watch failures.
  // checkov:skip=CKV_AZURE_17:Client certificates would reject Event Grid and Functions host traffic; the API is protected by function keys.
  name: appName
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    reserved: true
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      // A custom handler has no language image: the host starts the `edgevault` binary named in host.json.
      linuxFxVersion: ''
      minimumElasticInstanceCount: alwaysReadyInstances
      preWarmedInstanceCount: alwaysReadyInstances
      functionAppScaleLimit: maximumElasticWorkerCount
      ftpsState: 'Disabled'
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      http20Enabled: true
      remoteDebuggingEnabled: false
      use32BitWorkerProcess: false
    }
  }
}

// No publishing passwords: deployments authenticate with Entra (az CLI) instead of basic auth.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

// The app settings live in their own resource, after the site: EDGEVAULT_PRINCIPAL_ID is the site's own managed
// identity, whose principal id exists only once the site has been created. (Writing `appsettings` replaces the
// whole set, so every setting the app needs is here.)
resource appSettings 'Microsoft.Web/sites/config@2023-12-01' = {
  // checkov reads every sites/config resource as the web configuration; this one is the app settings collection,
  // so the web-config checks below do not apply to it:
  // checkov:skip=CKV_AZURE_63:Web-server HTTP logging is not an app setting; the Functions host logs requests to Application Insights.
  // checkov:skip=CKV_AZURE_65:Detailed error pages are not an app setting and the app serves no pages; errors go to Application Insights.
  // checkov:skip=CKV_AZURE_66:Failed request tracing is not an app setting; failed invocations are recorded in Application Insights.
  // checkov:skip=CKV_AZURE_222:Not an app setting; public network access is set (and justified) on the site.
  // checkov:skip=CKV_AZURE_80:The app is a Rust custom handler, not .NET.
  // checkov:skip=CKV_AZURE_13:App Service authentication would reject Event Grid (system key) and the portal's calls to the activation-key API (function keys); both authenticate with Functions keys instead.
  // checkov:skip=CKV_AZURE_88:No Azure Files content share on purpose: it needs a storage account key and shared keys are disabled; the app runs from its zip package.
  parent: site
  name: 'appsettings'
  properties: {
    FUNCTIONS_EXTENSION_VERSION: '~4'
    FUNCTIONS_WORKER_RUNTIME: 'custom'
    WEBSITE_RUN_FROM_PACKAGE: '1'
    // Host storage through the managed identity (roles in app-access.bicep); no connection string.
    AzureWebJobsStorage__accountName: storageAccountName
    AzureWebJobsStorage__credential: 'managedidentity'
    // Telemetry: the connection string only locates the component; ingestion is authenticated with the identity.
    APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
    // The identity-based Service Bus connection `ServiceBusConnection` of every worker's function.json.
    ServiceBusConnection__fullyQualifiedNamespace: serviceBusFullyQualifiedNamespace
    // handlers/src/config.rs
    AZURE_TENANT_ID: tenant().tenantId
    EDGEVAULT_PRINCIPAL_ID: site.identity.principalId
    EDGEVAULT_SUBSCRIPTIONS: join(subscriptionsInScope, ',')
    // edgevault's own records (sweep progress, recovery history): tables in the app's storage account, reached with
    // the identity's Storage Table Data Contributor role (app-access.bicep).
    EDGEVAULT_RECORDS_TABLE_URI: 'https://${storageAccountName}.table.${environment().suffixes.storage}'
    EDGEVAULT_CUTOVER: cutover
    EDGEVAULT_DELETE_VAULT_WITH_DEVICE: deleteVaultWithDevice ? 'true' : 'false'
    EDGEVAULT_ACTIVATION_KEY_TTL_HOURS: string(activationKeyTtlHours)
    RecoverySweepSchedule: recoverySweepSchedule
    RUST_LOG: rustLog
  }
}

output id string = site.id
output name string = site.name
output principalId string = site.identity.principalId
output defaultHostName string = site.properties.defaultHostName
// The Event Grid endpoint of the ArmEvents function (exists once the package is deployed).
output armEventsFunctionId string = '${site.id}/functions/ArmEvents'

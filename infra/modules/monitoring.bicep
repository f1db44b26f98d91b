// Log Analytics + workspace-based Application Insights, and the action group every edgevault alert rule notifies.
// Local (instrumentation-key) ingestion is disabled: the function app publishes telemetry with its managed identity
// (`APPLICATIONINSIGHTS_AUTHENTICATION_STRING=Authorization=AAD` and `Monitoring Metrics Publisher` on the component).

@description('Azure region of the resources.')
param location string

@description('Name stem shared by the resources of this deployment, e.g. edgevault-prod.')
param baseName string

@description('Days Log Analytics keeps data (30 is included in the ingestion price).')
@minValue(30)
@maxValue(730)
param retentionInDays int = 30

@description('Where alert notifications go; empty for none (the alerts still fire and show in the portal).')
param alertEmail string = ''

param tags object = {}

resource workspace 'Microsoft.OperationalInsights/workspaces@2022-10-01' = {
  name: 'log-${baseName}'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${baseName}'
  location: location
  kind: 'web'
  tags: tags
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    // Entra-authenticated ingestion only: an instrumentation key alone cannot write telemetry.
    DisableLocalAuth: true
    IngestionMode: 'LogAnalytics'
  }
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-${baseName}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'edgevault'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'operators'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

output workspaceId string = workspace.id
output appInsightsId string = appInsights.id
output appInsightsName string = appInsights.name
output appInsightsConnectionString string = appInsights.properties.ConnectionString
output actionGroupId string = actionGroup.id

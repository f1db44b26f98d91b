// The Azure Monitor workbook operators open beside the fleet page: recoveries and their time, alerts by kind, the
// sweep's findings over time, activations per day, failed invocations and dead-lettered messages, charted from the
// Log Analytics workspace the function app and Service Bus send to. The workbook itself is workbook.json (what the
// portal's "Advanced editor" shows); tests/workbook.rs checks that every event and field its queries read is one
// the handler emits.

param location string
param baseName string

@description('The Log Analytics workspace the queries run against (the app\'s workspace-based Application Insights writes AppTraces there).')
param workspaceId string

param tags object = {}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  // A workbook's name must be a GUID; derived, so a redeployment updates the same workbook.
  name: guid(resourceGroup().id, baseName, 'edgevault-fleet-workbook')
  location: location
  kind: 'shared'
  tags: tags
  properties: {
    displayName: 'edgevault fleet (${baseName})'
    category: 'workbook'
    sourceId: workspaceId
    serializedData: loadTextContent('workbook.json')
  }
}

output id string = workbook.id

// Role assignments: what the app's identity may do, on exactly the data planes
// the app uses, and (optionally) the same data roles for the deploying user so
// `python -m proactive send/status/poison` work against the deployment.
param storageAccountName string
param appInsightsName string
@description('Key Vault holding the bot\'s secret (SingleTenant); empty: none.')
param keyVaultName string = ''
param managedIdentityPrincipalId string
@description('Object id of the deploying user; empty: no user roles.')
param userIdentityPrincipalId string = ''
@description('Its type, as azd reports it (AZURE_PRINCIPAL_TYPE): User, or ServicePrincipal in CI.')
param userIdentityPrincipalType string = 'User'

// Built-in role definition ids (the same in every cloud).
// Blob: the Flex deployment package container and the Functions host's timer locks.
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
// Queue: the outbox queue trigger, the app's own enqueues, the poison queue.
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
// Table: references, deliveries, activities, pacing, sends, schedules, preferences.
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
// Application Insights identity ingestion (local auth is off).
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'
// Read the bot's secret through the app setting's Key Vault reference.
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
// The deploying user sets that secret once (README, "Deploy to Azure").
var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'

var withUser = !empty(userIdentityPrincipalId)
var withKeyVault = !empty(keyVaultName)

resource storageAccount 'Microsoft.Storage/storageAccounts@2024-01-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource keyVault 'Microsoft.KeyVault/vaults@2024-11-01' existing = if (withKeyVault) {
  name: withKeyVault ? keyVaultName : 'none'
}

resource identityBlob 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storageAccount.id, managedIdentityPrincipalId, storageBlobDataOwner)
  scope: storageAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: managedIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource identityQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storageAccount.id, managedIdentityPrincipalId, storageQueueDataContributor)
  scope: storageAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: managedIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource identityTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storageAccount.id, managedIdentityPrincipalId, storageTableDataContributor)
  scope: storageAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
    principalId: managedIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource identityMetrics 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, managedIdentityPrincipalId, monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: managedIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource identitySecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (withKeyVault) {
  name: guid(keyVault.id, managedIdentityPrincipalId, keyVaultSecretsUser)
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: managedIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource userBlob 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (withUser) {
  name: guid(storageAccount.id, userIdentityPrincipalId, storageBlobDataOwner)
  scope: storageAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: userIdentityPrincipalId
    principalType: userIdentityPrincipalType
  }
}

resource userQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (withUser) {
  name: guid(storageAccount.id, userIdentityPrincipalId, storageQueueDataContributor)
  scope: storageAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: userIdentityPrincipalId
    principalType: userIdentityPrincipalType
  }
}

resource userTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (withUser) {
  name: guid(storageAccount.id, userIdentityPrincipalId, storageTableDataContributor)
  scope: storageAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
    principalId: userIdentityPrincipalId
    principalType: userIdentityPrincipalType
  }
}

resource userSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (withUser && withKeyVault) {
  name: guid(keyVault.id, userIdentityPrincipalId, keyVaultSecretsOfficer)
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: userIdentityPrincipalId
    principalType: userIdentityPrincipalType
  }
}

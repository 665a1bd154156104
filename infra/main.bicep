// `azd up` infrastructure for proactive: a Python function app on Flex Consumption,
// its storage (tables and queues declared here), monitoring, and the Azure Bot that
// Teams talks to. Shaped like Azure-Samples/functions-quickstart-python-http-azd.
//
// No keys or secrets anywhere: storage is reached by a user-assigned identity
// (shared keys off), Application Insights takes identity ingestion only (local auth
// off), the bot is by default that same identity (UserAssignedMSI); the optional
// SingleTenant app registration keeps its secret in Key Vault, referenced from the
// app settings, never written into them.
//
// Azure Verified Modules, pinned to the newest release read (source and CHANGELOG
// at its git tag in Azure/bicep-registry-modules) when this was written:
//   managed-identity/user-assigned-identity 0.6.0, web/serverfarm 0.7.0 (FC1 sets
//   tier FlexConsumption itself), storage/storage-account 0.33.0, operational-insights/
//   workspace 0.16.1, insights/component 0.8.0, key-vault/vault 0.14.0; web/site 0.24.0
//   in app/api.bicep, network modules in app/vnet.bicep and app/storage-PrivateEndpoint.bicep.
// The template pins older ones (site 0.15.1 with `virtualNetworkSubnetId` and
// `appSettingsKeyValuePairs`): site takes app settings through `configs` since 0.16.0
// (a new major shape), renamed the subnet to `virtualNetworkSubnetResourceId` in 0.17.0
// and the vnet*Enabled flags to `outboundVnetRouting` in 0.18.0, so don't mix its
// examples in.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; makes the resource names unique.')
param environmentName string

@minLength(1)
@description('Region of every resource but the bot (global). Only regions that offer Flex Consumption, so azd\'s prompt lists only those.')
// The regions that offer Flex Consumption, as the official quickstart lists them
// (Azure-Samples/functions-quickstart-python-http-azd, infra/main.bicep, commit
// 7ed4638 of 2025-11-24, read 2026-12-06). `az functionapp list-flexconsumption-locations`
// gives today's list; a region added since is one line here.
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'eastus2euap'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of whoever runs azd (azd sets it: the signed-in user, or the service principal in CI). When set, it gets the storage data roles too, to run `python -m proactive send/status` against the deployment.')
param principalId string = ''

// A role assignment whose principalType doesn't match the principal fails with
// UnmatchedPrincipalType: azd fills AZURE_PRINCIPAL_TYPE with 'User' or
// 'ServicePrincipal' (CI) along with AZURE_PRINCIPAL_ID.
@description('Type of principalId (azd sets AZURE_PRINCIPAL_TYPE).')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

@description('Put the app in a virtual network and reach storage (and the Key Vault) over private endpoints only.')
param vnetEnabled bool = false

@description('vnetEnabled only: one public IPv4 address (your machine\'s) that may still reach storage and the Key Vault, for the CLI and `az storage`. Empty: none.')
param allowedIpAddress string = ''

@description('The bot\'s identity. UserAssignedMSI: the app\'s managed identity is the bot (no secret at all). SingleTenant: an app registration you created (needed for Graph installs); its secret goes in the Key Vault this creates.')
@allowed([
  'UserAssignedMSI'
  'SingleTenant'
])
param botAppType string = 'UserAssignedMSI'

@description('SingleTenant only: the app registration\'s application (client) id.')
param botAppId string = ''

@description('SingleTenant only: the app registration\'s tenant; empty means the tenant deployed into.')
param botAppTenantId string = ''

@maxLength(42)
@description('The bot\'s display name in Azure, also PROACTIVE_BOT_NAME.')
param botDisplayName string = 'proactive'

@description('Azure Bot pricing tier. The Teams channel is a standard channel: free on F0.')
@allowed([
  'F0'
  'S1'
])
param botSku string = 'F0'

@description('PROACTIVE_CLOUD: which Teams cloud the app talks to.')
@allowed([
  'Public'
  'GCC'
  'GCCHigh'
  'DoD'
])
param proactiveCloud string = 'Public'

@description('PROACTIVE_ALLOWED_TENANTS: comma-separated tenant ids allowed in and out; empty allows all.')
param allowedTenants string = ''

@description('PROACTIVE_DEFAULT_TIMEZONE: IANA zone for recipient-local schedules when the recipient\'s is not known yet.')
param defaultTimezone string = 'UTC'

@description('PROACTIVE_TABLE_PREFIX: letters and digits put before every table name, to share one account. Empty here: this deployment owns its account.')
param tablePrefix string = ''

@description('OUTBOX_QUEUE: the queue producers put messages on; the poison queue is `<name>-poison`.')
param outboxQueueName string = 'outbox'

// 3.12, as the official quickstart: Flex Consumption offers 3.10-3.13 (3.11 supported
// until 31 Oct 2027, 3.12 until 2028); azure-functions 1.26.0 is the last release for
// 3.10-3.12, so not 3.13 yet. CI runs the tests on 3.11 and the unit tests on 3.12
// (scripts/test-py312).
@description('Python version of the function app.')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.12'

@description('Memory of each Flex Consumption instance.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@minValue(40)
@maxValue(1000)
@description('Upper bound of Flex Consumption scale-out.')
param maximumInstanceCount int = 100

@description('Resource group name; empty: rg-<environment>.')
param resourceGroupName string = ''

@description('Optional: the application (client) id of an Entra ID app registration for the operations page\'s sign-in (App Service authentication, no secret: the registration issues ID tokens, has the redirect URI https://<app>/.auth/login/aad/callback and the app role Proactive.Operations). Empty: no sign-in; the page then reads the keyed API only.')
param pageSignInClientId string = ''

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = '${abbrs.webSitesFunctions}api-${resourceToken}'
var deploymentStorageContainerName = 'app-package-${take(functionAppName, 32)}-${take(toLower(uniqueString(functionAppName, resourceToken)), 7)}'
var vNetName = '${abbrs.networkVirtualNetworks}${resourceToken}'
var botUsesAppRegistration = botAppType == 'SingleTenant'
var keyVaultName = botUsesAppRegistration ? '${abbrs.keyVaultVaults}${resourceToken}' : ''
// VNet mode: storage and the Key Vault take private endpoints only, plus the one
// allowed address when set (public access then stays on, limited to that IP).
var publicNetworkAccess = (vnetEnabled && empty(allowedIpAddress)) ? 'Disabled' : 'Enabled'
var networkAcls = vnetEnabled ? {
  defaultAction: 'Deny'
  bypass: 'None'
  ipRules: empty(allowedIpAddress) ? [] : [
    {
      value: allowedIpAddress
      action: 'Allow'
    }
  ]
} : {
  defaultAction: 'Allow'
  bypass: 'AzureServices'
}
// The tables the app uses (proactive/runtime.py), each behind PROACTIVE_TABLE_PREFIX.
var tableNames = [
  'references'
  'deliveries'
  'activities'
  'pacing'
  'sends'
  'schedules'
  'preferences'
]

// Combinations that can't work, refused before anything is created: the resource
// group's name is the first thing ARM evaluates, so fail() there stops the deployment
// at validation with this one line (Bicep's fail(): "Bicep functions - flow control").
var singleTenantWithoutAppId = botUsesAppRegistration && empty(botAppId)
var governmentCloud = (proactiveCloud == 'GCCHigh') || (proactiveCloud == 'DoD')
var singleTenantRefusal = 'BOT_APP_TYPE=SingleTenant needs BOT_APP_ID: azd env set BOT_APP_ID <your app registration\'s application (client) id>'
var governmentRefusal = 'PROACTIVE_CLOUD=${proactiveCloud} needs the bot registered in Azure Government, which this template (Flex Consumption in commercial regions) does not deploy to: see README, "Sovereign clouds"'
var refusal = singleTenantWithoutAppId ? singleTenantRefusal : (governmentCloud ? governmentRefusal : '')
var resourceGroupNameOrDefault = !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: empty(refusal) ? resourceGroupNameOrDefault : fail(refusal)
  location: location
  tags: tags
}

// The app's identity: storage, Application Insights, Key Vault and (by default) the bot.
module apiUserAssignedIdentity 'br/public:avm/res/managed-identity/user-assigned-identity:0.6.0' = {
  name: 'apiUserAssignedIdentity'
  scope: rg
  params: {
    enableTelemetry: false
    name: '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
    location: location
    tags: tags
  }
}

module appServicePlan 'br/public:avm/res/web/serverfarm:0.7.0' = {
  name: 'appserviceplan'
  scope: rg
  params: {
    enableTelemetry: false
    name: '${abbrs.webServerFarms}${resourceToken}'
    skuName: 'FC1'
    kind: 'functionapp'
    reserved: true
    zoneRedundant: false
    location: location
    tags: tags
  }
}

module storage 'br/public:avm/res/storage/storage-account:0.33.0' = {
  name: 'storage'
  scope: rg
  params: {
    enableTelemetry: false
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    kind: 'StorageV2'
    skuName: 'Standard_LRS'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    dnsEndpointType: 'Standard'
    publicNetworkAccess: publicNetworkAccess
    networkAcls: networkAcls
    blobServices: {
      containers: [
        {
          name: deploymentStorageContainerName
        }
      ]
      deleteRetentionPolicyEnabled: true
      deleteRetentionPolicyDays: 7
    }
    queueServices: {
      queues: [
        {
          name: outboxQueueName
        }
        {
          name: '${outboxQueueName}-poison'
        }
      ]
    }
    tableServices: {
      tables: [for table in tableNames: {
        name: '${tablePrefix}${table}'
      }]
    }
  }
}

module logAnalytics 'br/public:avm/res/operational-insights/workspace:0.16.1' = {
  name: 'loganalytics'
  scope: rg
  params: {
    enableTelemetry: false
    name: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    location: location
    tags: tags
    dataRetention: 30
  }
}

module monitoring 'br/public:avm/res/insights/component:0.8.0' = {
  name: 'appinsights'
  scope: rg
  params: {
    enableTelemetry: false
    name: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    workspaceResourceId: logAnalytics.outputs.resourceId
    // Identity ingestion only: the connection string alone can't send telemetry.
    disableLocalAuth: true
    retentionInDays: 30
  }
}

// SingleTenant only: holds the app registration's secret (named MicrosoftAppPassword),
// which you set once after provisioning (README, "Deploy to Azure"); the app setting refers to it.
module keyVault 'br/public:avm/res/key-vault/vault:0.14.0' = if (botUsesAppRegistration) {
  name: 'keyvault'
  scope: rg
  params: {
    enableTelemetry: false
    name: keyVaultName
    location: location
    tags: tags
    sku: 'standard'
    enableRbacAuthorization: true
    enablePurgeProtection: true
    // The shortest allowed: with purge protection a deleted vault keeps its name
    // this long, so `azd down` then `azd up` of one environment waits at most a week.
    softDeleteRetentionInDays: 7
    enableVaultForDeployment: false
    enableVaultForTemplateDeployment: false
    enableVaultForDiskEncryption: false
    // VNet mode: private like storage (its private endpoint is in
    // app/storage-PrivateEndpoint.bicep); Key Vault's ipRules take the same address.
    publicNetworkAccess: publicNetworkAccess
    networkAcls: vnetEnabled ? {
      defaultAction: 'Deny'
      bypass: 'None'
      ipRules: empty(allowedIpAddress) ? [] : [
        {
          value: allowedIpAddress
        }
      ]
    } : {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

module serviceVirtualNetwork 'app/vnet.bicep' = if (vnetEnabled) {
  name: 'serviceVirtualNetwork'
  scope: rg
  params: {
    location: location
    tags: tags
    vNetName: vNetName
  }
}

module storagePrivateEndpoint 'app/storage-PrivateEndpoint.bicep' = if (vnetEnabled) {
  name: 'servicePrivateEndpoint'
  scope: rg
  params: {
    location: location
    tags: tags
    virtualNetworkName: vNetName
    subnetName: vnetEnabled ? serviceVirtualNetwork.outputs.peSubnetName : ''
    resourceName: storage.outputs.name
    keyVaultName: keyVaultName
  }
  dependsOn: [
    keyVault
  ]
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    location: location
    tags: tags
    appServicePlanId: appServicePlan.outputs.resourceId
    applicationInsightsName: monitoring.outputs.name
    storageAccountName: storage.outputs.name
    deploymentStorageContainerName: deploymentStorageContainerName
    identityId: apiUserAssignedIdentity.outputs.resourceId
    identityClientId: apiUserAssignedIdentity.outputs.clientId
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    virtualNetworkSubnetId: vnetEnabled ? serviceVirtualNetwork.outputs.appSubnetID : ''
    keyVaultName: keyVaultName
    outboxQueueName: outboxQueueName
    tablePrefix: tablePrefix
    botAppType: botAppType
    botAppId: botUsesAppRegistration ? botAppId : apiUserAssignedIdentity.outputs.clientId
    botAppTenantId: botUsesAppRegistration && !empty(botAppTenantId) ? botAppTenantId : tenant().tenantId
    botName: botDisplayName
    proactiveCloud: proactiveCloud
    allowedTenants: allowedTenants
    defaultTimezone: defaultTimezone
    pageSignInClientId: pageSignInClientId
  }
}

module bot 'app/bot.bicep' = {
  name: 'bot'
  scope: rg
  params: {
    name: '${abbrs.botServiceBotServices}${resourceToken}'
    displayName: botDisplayName
    sku: botSku
    tags: tags
    messagingEndpoint: 'https://${api.outputs.defaultHostname}/api/messages'
    appType: botAppType
    appId: botUsesAppRegistration ? botAppId : apiUserAssignedIdentity.outputs.clientId
    appTenantId: botUsesAppRegistration && !empty(botAppTenantId) ? botAppTenantId : tenant().tenantId
    identityResourceId: apiUserAssignedIdentity.outputs.resourceId
    proactiveCloud: proactiveCloud
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbacAssignments'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    appInsightsName: monitoring.outputs.name
    keyVaultName: keyVaultName
    managedIdentityPrincipalId: apiUserAssignedIdentity.outputs.principalId
    userIdentityPrincipalId: principalId
    userIdentityPrincipalType: principalType
  }
  // rbac.bicep looks the vault up by name; it exists only on the SingleTenant path.
  dependsOn: [
    keyVault
  ]
}

// What azd stores in the environment (.azure/<env>/.env) and what you need next:
// the bot id for the Teams app manifest, where producers put messages.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_NAME string = api.outputs.SERVICE_API_NAME
output SERVICE_API_NAME string = api.outputs.SERVICE_API_NAME
output AZURE_USER_ASSIGNED_IDENTITY_CLIENT_ID string = apiUserAssignedIdentity.outputs.clientId
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_BLOB_ENDPOINT string = storage.outputs.serviceEndpoints.blob
output AZURE_STORAGE_QUEUE_ENDPOINT string = storage.outputs.serviceEndpoints.queue
output AZURE_STORAGE_TABLE_ENDPOINT string = storage.outputs.serviceEndpoints.table
output AZURE_KEY_VAULT_NAME string = keyVaultName
output OUTBOX_QUEUE string = outboxQueueName
output BOT_ID string = bot.outputs.botId
output BOT_SERVICE_NAME string = bot.outputs.name
output BOT_MESSAGING_ENDPOINT string = bot.outputs.messagingEndpoint
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.connectionString

// The function app on Flex Consumption and every app setting it gets.
// avm/res/web/site 0.24.0 (newest release read): takes app settings through `configs`
// and the subnet as `virtualNetworkSubnetResourceId` (renamed in 0.17.0).
param name string
param location string = resourceGroup().location
param tags object = {}
param serviceName string = 'api'
param appServicePlanId string
param applicationInsightsName string
param storageAccountName string
param deploymentStorageContainerName string
param identityId string
param identityClientId string
param pythonVersion string
param instanceMemoryMB int
param maximumInstanceCount int
param virtualNetworkSubnetId string = ''
@description('Key Vault holding MicrosoftAppPassword (SingleTenant); empty: no secret at all.')
param keyVaultName string = ''
param outboxQueueName string
param tablePrefix string
param botAppType string
param botAppId string
param botAppTenantId string
param botName string
param proactiveCloud string
param allowedTenants string
param defaultTimezone string
// The operations page's sign-in (README "Operations page"): App Service authentication
// with this Entra ID app registration; empty: off.
param pageSignInClientId string = ''

resource stg 'Microsoft.Storage/storageAccounts@2024-01-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Versionless: the app resolves the newest version of the secret, so rotating it
// is `az keyvault secret set` plus a restart, no redeployment.
var botSecretUri = 'https://${keyVaultName}${environment().suffixes.keyvaultDns}/secrets/MicrosoftAppPassword'

// Every app setting, in this one place (tests/test_infra.py reads it from here and
// checks it against what the app reads). Nothing for local development
// (PROACTIVE_LOCAL_DEV, PROACTIVE_CLOUD_OVERRIDE) and no key or secret value:
// the bot's secret, when there is one, is a Key Vault reference.
var appSettings = union({
  // The Functions host's storage (queue trigger, timer locks) and the app's own
  // table and queue clients, by identity. Service URIs and the account name both,
  // as avm/res/web/site's config module writes them for identity-based storage.
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__accountName: stg.name
  AzureWebJobsStorage__blobServiceUri: stg.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: stg.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: stg.properties.primaryEndpoints.table
  // Application Insights accepts only identity ingestion (local auth is off).
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  OUTBOX_QUEUE: outboxQueueName
  PROACTIVE_TABLE_PREFIX: tablePrefix
  MicrosoftAppId: botAppId
  MicrosoftAppType: botAppType
  MicrosoftAppTenantId: botAppTenantId
  PROACTIVE_CLOUD: proactiveCloud
  PROACTIVE_ALLOWED_TENANTS: allowedTenants
  PROACTIVE_DEFAULT_TIMEZONE: defaultTimezone
  PROACTIVE_BOT_NAME: botName
  // FUNCTIONS_EXTENSION_VERSION and FUNCTIONS_WORKER_RUNTIME are not set: on Flex
  // Consumption the platform runs host ~4 and the runtime comes from
  // functionAppConfig.runtime below (the official template sets neither).
}, empty(keyVaultName) ? {} : {
  MicrosoftAppPassword: '@Microsoft.KeyVault(SecretUri=${botSecretUri})'
})

module api 'br/public:avm/res/web/site:0.24.0' = {
  name: '${serviceName}-flex-consumption'
  params: {
    enableTelemetry: false
    kind: 'functionapp,linux'
    name: name
    location: location
    tags: union(tags, {
      'azd-service-name': serviceName
    })
    serverFarmResourceId: appServicePlanId
    managedIdentities: {
      userAssignedResourceIds: [
        identityId
      ]
    }
    // Key Vault references resolve with this identity (the app has no system identity).
    keyVaultAccessIdentityResourceId: identityId
    httpsOnly: true
    clientAffinityEnabled: false
    // azd deploys with an Entra token; nobody needs publishing passwords.
    basicPublishingCredentialsPolicies: [
      {
        name: 'ftp'
        allow: false
      }
      {
        name: 'scm'
        allow: false
      }
    ]
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${stg.properties.primaryEndpoints.blob}${deploymentStorageContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
    // Only what Flex Consumption accepts. Its deprecation list ("Flex Consumption plan
    // deprecations" in learn.microsoft.com/azure/azure-functions/functions-app-settings,
    // read 2026-12-06) names `ftpsState` ("FTPS not supported"; newer ARM stamps refuse
    // the whole site with error 51021) and `alwaysOn` ("Not valid"), so neither is set
    // (FTP is off anyway: no FTP on Flex, and the ftp publishing policy above is off).
    // minTlsVersion and http20Enabled are not on it. The object replaces the module's
    // default ({alwaysOn: true}), so it must stay explicit. tests/test_infra.py checks it.
    siteConfig: {
      minTlsVersion: '1.2'
      http20Enabled: true
    }
    virtualNetworkSubnetResourceId: !empty(virtualNetworkSubnetId) ? virtualNetworkSubnetId : null
    configs: [
      {
        name: 'appsettings'
        properties: appSettings
        // The settings are exactly these: one added by hand in the portal (say
        // PROACTIVE_LOCAL_DEV) is removed by the next `azd provision`.
        retainCurrentAppSettings: false
      }
    ]
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: name
}

// App Service authentication for the operations page only: anonymous requests still
// pass (the bot's /api/messages and the producers' keyed API must), and the app
// serves the page's data (/api/ui/data/) only to a signed-in user holding the app
// role (proactive/api/page_auth.py). No client secret: the OpenID Connect implicit
// flow, an ID token only (authsettingsV2 "clientSecretSettingName": optional).
resource pageSignIn 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(pageSignInClientId)) {
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: false
      unauthenticatedClientAction: 'AllowAnonymous'
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: pageSignInClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            pageSignInClientId
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
  dependsOn: [
    api
  ]
}

output SERVICE_API_NAME string = api.outputs.name
output defaultHostname string = api.outputs.defaultHostname

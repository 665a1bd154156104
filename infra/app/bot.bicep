// The Azure Bot registration Teams sends activities through, with the Teams channel.
// There is no Azure Verified Module for Microsoft.BotService (avm/res has only
// health-bot), so the resource is declared as the Microsoft 365 Agents Toolkit
// templates declare it, at the newest GA API version (2022-09-15).
param name string
@maxLength(42)
param displayName string
param sku string = 'F0'
param tags object = {}
@description('https://<function app default hostname>/api/messages')
param messagingEndpoint string
@allowed([
  'UserAssignedMSI'
  'SingleTenant'
])
param appType string
@description('The bot id: the managed identity\'s client id (UserAssignedMSI) or the app registration\'s (SingleTenant).')
param appId string
param appTenantId string
@description('The managed identity that is the bot when appType is UserAssignedMSI.')
param identityResourceId string
@description('PROACTIVE_CLOUD: Public or GCC here (main.bicep refuses GCCHigh and DoD).')
param proactiveCloud string = 'Public'

// New multi-tenant bots can't be created since 31 July 2025: both kinds are single tenant.
resource bot 'Microsoft.BotService/botServices@2022-09-15' = {
  name: name
  // Bot Service registrations are global (the relay, not where the app runs).
  location: 'global'
  kind: 'azurebot'
  tags: tags
  sku: {
    name: sku
  }
  properties: {
    displayName: displayName
    endpoint: messagingEndpoint
    msaAppType: appType
    msaAppId: appId
    msaAppTenantId: appTenantId
    msaAppMSIResourceId: appType == 'UserAssignedMSI' ? identityResourceId : null
  }
}

resource teams 'Microsoft.BotService/botServices/channels@2022-09-15' = {
  parent: bot
  name: 'MsTeamsChannel'
  location: 'global'
  properties: {
    channelName: 'MsTeamsChannel'
    properties: {
      isEnabled: true
      // Which Teams the channel serves: the portal's "Microsoft Teams Commercial" or
      // "Microsoft Teams Government" (GCC). ARM's values: CommercialDeployment (the
      // default) and GCCModerateDeployment (MsTeamsChannelProperties.deploymentEnvironment).
      deploymentEnvironment: (proactiveCloud == 'GCC') ? 'GCCModerateDeployment' : 'CommercialDeployment'
    }
  }
}

@description('The bot id the Teams app manifest needs (bots[].botId).')
output botId string = appId
output name string = bot.name
output resourceId string = bot.id
output messagingEndpoint string = bot.properties.endpoint

// Optional (vnetEnabled): private endpoints for the three storage services the
// app uses (blob: deployment package and timer locks; queue: the outbox; table:
// references, deliveries...) and for the Key Vault when there is one (the bot's
// secret, SingleTenant), each with its private DNS zone linked to the VNet.
// avm/res/network/private-endpoint 0.12.1 and avm/res/network/private-dns-zone 0.8.1.
param virtualNetworkName string
param subnetName string
@description('Name of the storage account.')
param resourceName string
param location string = resourceGroup().location
param tags object = {}
@description('The Key Vault (SingleTenant only); empty: none.')
param keyVaultName string = ''

var services = [
  'blob'
  'queue'
  'table'
]

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' existing = {
  name: virtualNetworkName
}

resource storageAccount 'Microsoft.Storage/storageAccounts@2024-01-01' existing = {
  name: resourceName
}

module privateDnsZones 'br/public:avm/res/network/private-dns-zone:0.8.1' = [for service in services: {
  name: '${service}-private-dns-zone-deployment'
  params: {
    enableTelemetry: false
    name: 'privatelink.${service}.${environment().suffixes.storage}'
    location: 'global'
    tags: tags
    virtualNetworkLinks: [
      {
        name: '${resourceName}-${service}-link-${take(toLower(uniqueString(resourceName, virtualNetworkName)), 4)}'
        virtualNetworkResourceId: vnet.id
        registrationEnabled: false
        location: 'global'
        tags: tags
      }
    ]
  }
}]

module privateEndpoints 'br/public:avm/res/network/private-endpoint:0.12.1' = [for (service, i) in services: {
  name: '${service}-private-endpoint-deployment'
  params: {
    enableTelemetry: false
    name: '${service}-private-endpoint'
    location: location
    tags: tags
    subnetResourceId: '${vnet.id}/subnets/${subnetName}'
    privateLinkServiceConnections: [
      {
        name: '${service}PrivateLinkConnection'
        properties: {
          privateLinkServiceId: storageAccount.id
          groupIds: [
            service
          ]
        }
      }
    ]
    privateDnsZoneGroup: {
      name: '${service}PrivateDnsZoneGroup'
      privateDnsZoneGroupConfigs: [
        {
          name: 'storage${service}ARecord'
          privateDnsZoneResourceId: privateDnsZones[i].outputs.resourceId
        }
      ]
    }
  }
}]

resource keyVault 'Microsoft.KeyVault/vaults@2024-11-01' existing = if (!empty(keyVaultName)) {
  name: !empty(keyVaultName) ? keyVaultName : 'none'
}

// The vault's zone in Azure's public cloud (the only one main.bicep deploys to):
// "Azure Private Endpoint private DNS zone values", Key Vault.
module keyVaultPrivateDnsZone 'br/public:avm/res/network/private-dns-zone:0.8.1' = if (!empty(keyVaultName)) {
  name: 'vault-private-dns-zone-deployment'
  params: {
    enableTelemetry: false
    name: 'privatelink.vaultcore.azure.net'
    location: 'global'
    tags: tags
    virtualNetworkLinks: [
      {
        name: '${keyVaultName}-vault-link-${take(toLower(uniqueString(keyVaultName, virtualNetworkName)), 4)}'
        virtualNetworkResourceId: vnet.id
        registrationEnabled: false
        location: 'global'
        tags: tags
      }
    ]
  }
}

module keyVaultPrivateEndpoint 'br/public:avm/res/network/private-endpoint:0.12.1' = if (!empty(keyVaultName)) {
  name: 'vault-private-endpoint-deployment'
  params: {
    enableTelemetry: false
    name: 'vault-private-endpoint'
    location: location
    tags: tags
    subnetResourceId: '${vnet.id}/subnets/${subnetName}'
    privateLinkServiceConnections: [
      {
        name: 'vaultPrivateLinkConnection'
        properties: {
          privateLinkServiceId: keyVault.id
          groupIds: [
            'vault'
          ]
        }
      }
    ]
    privateDnsZoneGroup: {
      name: 'vaultPrivateDnsZoneGroup'
      privateDnsZoneGroupConfigs: [
        {
          name: 'vaultARecord'
          privateDnsZoneResourceId: keyVaultPrivateDnsZone.outputs.resourceId
        }
      ]
    }
  }
}

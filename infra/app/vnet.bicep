// Optional (vnetEnabled): a virtual network with a subnet for storage private
// endpoints and one the Flex Consumption app integrates with (delegated to
// Microsoft.App/environments, as Flex requires). avm/res/network/virtual-network 0.10.1.
@description('Name of the virtual network.')
param vNetName string
param location string = resourceGroup().location
param tags object = {}
param peSubnetName string = 'private-endpoints-subnet'
param appSubnetName string = 'app'

module virtualNetwork 'br/public:avm/res/network/virtual-network:0.10.1' = {
  name: 'vnet-deployment'
  params: {
    enableTelemetry: false
    name: vNetName
    location: location
    tags: tags
    addressPrefixes: [
      '10.0.0.0/16'
    ]
    subnets: [
      {
        name: peSubnetName
        addressPrefix: '10.0.1.0/24'
        privateEndpointNetworkPolicies: 'Disabled'
        privateLinkServiceNetworkPolicies: 'Enabled'
      }
      {
        name: appSubnetName
        addressPrefix: '10.0.2.0/24'
        privateEndpointNetworkPolicies: 'Disabled'
        privateLinkServiceNetworkPolicies: 'Enabled'
        delegation: 'Microsoft.App/environments'
      }
    ]
  }
}

output peSubnetName string = peSubnetName
output peSubnetID string = '${virtualNetwork.outputs.resourceId}/subnets/${peSubnetName}'
output appSubnetName string = appSubnetName
output appSubnetID string = '${virtualNetwork.outputs.resourceId}/subnets/${appSubnetName}'

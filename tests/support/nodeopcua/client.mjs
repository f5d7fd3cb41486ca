// A node-opcua client (a third-party stack) that reads nodes of a secured server once, for the interop tests.
//
// Usage: node client.mjs ENDPOINT POLICY MODE PKI_DIR USER PASSWORD NODE_ID...
//   POLICY    Basic256Sha256 | Aes128_Sha256_RsaOaep | Aes256_Sha256_RsaPss
//   MODE      Sign | SignAndEncrypt
//   PKI_DIR   node-opcua's certificate folder; the client makes its own certificate there on first use
// Prints one JSON object {"<node id>": {"value": …, "status": "Good", "sourceTimestamp": "…"}, …} and exits 0;
// prints the error and exits 1 when it cannot connect, open the session or read.
import process from 'node:process'

import { AttributeIds, MessageSecurityMode, OPCUACertificateManager, OPCUAClient, SecurityPolicy } from 'node-opcua'

const [endpoint, policy, mode, pkiDir, userName, password, ...nodeIds] = process.argv.slice(2)
if (!endpoint || !(policy in SecurityPolicy) || !(mode in MessageSecurityMode) || !pkiDir || !nodeIds.length) {
  console.error('usage: node client.mjs ENDPOINT POLICY MODE PKI_DIR USER PASSWORD NODE_ID...')
  process.exit(2)
}

const clientCertificateManager = new OPCUACertificateManager({
  rootFolder: pkiDir,
  automaticallyAcceptUnknownCertificate: true,
})
await clientCertificateManager.initialize()

const client = OPCUAClient.create({
  applicationName: 'Shopfloor node-opcua interop client',
  applicationUri: 'urn:shopfloor:test:nodeopcua-client',
  clientCertificateManager,
  securityPolicy: SecurityPolicy[policy],
  securityMode: MessageSecurityMode[mode],
  endpointMustExist: false,
  connectionStrategy: { maxRetry: 0 },
})

try {
  await client.connect(endpoint)
  const session = await client.createSession({ type: 1 /* UserTokenType.UserName */, userName, password })
  const dataValues = await session.read(nodeIds.map((nodeId) => ({ nodeId, attributeId: AttributeIds.Value })))
  const result = {}
  nodeIds.forEach((nodeId, index) => {
    const dataValue = dataValues[index]
    result[nodeId] = {
      value: dataValue.value.value,
      status: dataValue.statusCode.name,
      sourceTimestamp: dataValue.sourceTimestamp ? dataValue.sourceTimestamp.toISOString() : null,
    }
  })
  console.log(JSON.stringify(result))
  await session.close()
  await client.disconnect()
  process.exit(0)
} catch (error) {
  console.error(`node-opcua client: ${error.message}`)
  await client.disconnect().catch(() => {})
  process.exit(1)
}

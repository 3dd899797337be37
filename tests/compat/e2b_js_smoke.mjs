// E2B's JavaScript SDK, unmodified, against E2B_API_URL / E2B_SANDBOX_URL / E2B_API_KEY
// (test_e2b.py::test_javascript_sdk_smoke installs it next to a copy of this file).
import { Sandbox } from 'e2b'

const sb = await Sandbox.create({ metadata: { sdk: 'js' } })
try {
  const r = await sb.commands.run('echo from-js; echo err >&2')
  if (r.stdout !== 'from-js\n' || r.stderr !== 'err\n' || r.exitCode !== 0) throw new Error(JSON.stringify(r))
  await sb.files.write('/home/user/js.txt', 'written by js')
  const back = await sb.files.read('/home/user/js.txt')
  if (back !== 'written by js') throw new Error(`read ${back}`)
  const names = (await sb.files.list('/home/user')).map((e) => e.name)
  if (!names.includes('js.txt')) throw new Error(`list ${names}`)
  const info = await sb.getInfo()
  if (info.metadata.sdk !== 'js') throw new Error(JSON.stringify(info))
} finally {
  await sb.kill()
}
console.log('js sdk ok')

// Redis's CPU seconds so far (user + system, from INFO cpu), for the benchmarks'
// Redis CPU per call or request.

/** @param {import('ioredis').Redis} admin */
export async function redisCpuSeconds(admin) {
  const info = await admin.info('cpu')
  const get = (k) => Number(new RegExp(`${k}:([\\d.]+)`).exec(info)[1])
  return get('used_cpu_user') + get('used_cpu_sys')
}

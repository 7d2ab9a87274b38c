// The same 3-way (or N-way) fan-out as the gateway's scenario (b), as a government operator
// might build it on nginx + njs: concurrent subrequests to the sources, answers merged into one
// JSON document. No token check, no mapping, no view filter, no audit: a floor, not a peer in
// features.
function dossier(r) {
  const n = Number(r.variables.fanout_n || 3);
  const body = JSON.stringify({ bsn: '999993653' });
  const calls = [];
  for (let i = 1; i <= n; i++) {
    const id = i < 10 ? `0${i}` : `${i}`;
    calls.push(r.subrequest(`/_bron/${id}`, { method: 'POST', body })
      .then((reply) => ({ id, reply }), (e) => ({ id, error: String(e) })));
  }
  Promise.all(calls).then((answers) => {
    const zaken = [];
    const sources = [];
    // njs 0.7 (Debian 12) has no for..of.
    answers.forEach((a) => {
      let status = 'error';
      if (a.reply && a.reply.status === 200) {
        try {
          const doc = JSON.parse(a.reply.responseText);
          (doc.zaken || []).forEach((z) => {
            z._source = `bron-${a.id}`;
            zaken.push(z);
          });
          status = 'ok';
        } catch (e) {
          status = 'error';
        }
      }
      sources.push({ adapter: `bron-${a.id}`, status });
    });
    const complete = sources.every((s) => s.status === 'ok');
    r.headersOut['Content-Type'] = 'application/json';
    r.return(complete ? 200 : 502, JSON.stringify({ complete, sections: { bronzaken: zaken }, sources }));
  });
}

export default { dossier };

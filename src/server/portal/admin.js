// Operator status page: adapters with their last status, latency, circuit state and cache hit
// ratio; the loaded config version; reload errors. The admin token stays in this tab.
import { api, el, fill, formatMoment, notice, problemNotice } from './shared/portaal.js';

const KEY = 'ketenportaal.beheer';
const meldingen = document.getElementById('meldingen');
const form = document.getElementById('aanmelden');
const statusBox = document.getElementById('status');
let timer = null;

const CIRCUIT = { closed: ['gesloten (normaal)', 'ok'], open: ['open (bron wordt niet aangeroepen)', 'error'], half_open: ['half open (proefverzoek)', 'warn'], 'half-open': ['half open (proefverzoek)', 'warn'] };
const SOURCE = { ok: 'ok', cached: 'ok', stale: 'warn', unavailable: 'error', error: 'error', timeout: 'error' };

function badge(text, kind) {
  return el('span', { class: `badge ${kind}` }, text);
}

function size(b) {
  const n = (x, d) => x.toLocaleString('nl-NL', { maximumFractionDigits: d });
  if (b >= 1048576) return `${n(b / 1048576, 1)} MiB`;
  if (b >= 1024) return `${n(b / 1024, 1)} KiB`;
  return `${b} bytes`;
}

function pct(x) {
  return x === null || x === undefined ? '—' : `${(x * 100).toLocaleString('nl-NL', { maximumFractionDigits: 1 })}%`;
}

function render(st) {
  const reload = st.reload || {};
  const cfg = el('dl', { class: 'fields' },
    el('dt', {}, 'Bestand'), el('dd', {}, st.config.file),
    el('dt', {}, 'Versie'), el('dd', { id: 'config-versie' }, st.config.version),
    el('dt', {}, 'Cache'), el('dd', {}, `${st.cache.entries} antwoorden, ${size(st.cache.bytes)} van ${size(st.cache.max_bytes)}`),
    el('dt', {}, 'Opslag'), el('dd', {}, st.store ? `${st.store.path} (${st.store.writable ? 'schrijfbaar' : 'NIET schrijfbaar'})` : 'geen'),
    el('dt', {}, 'Herladen'), el('dd', {}, reload.last_error
      ? badge('mislukt', 'error') : badge('in orde', 'ok'),
    reload.reloads !== undefined ? ` ${reload.reloads} keer herladen, ${reload.refused || 0} keer geweigerd` : '',
    reload.last_error ? el('pre', { id: 'reload-fout' }, reload.last_error) : null));
  const notes = [];
  if (reload.last_error) notes.push(notice('error', 'De laatste herlaadpoging is mislukt; de vorige configuratie blijft actief.', reload.last_error));
  if (st.store && !st.store.writable) notes.push(notice('error', 'De opslag is niet schrijfbaar: raadplegingen worden geweigerd (fail closed).'));
  const open = st.adapters.filter((a) => a.circuit !== 'closed');
  if (open.length) notes.push(notice('warn', `Circuit niet gesloten voor: ${open.map((a) => a.id).join(', ')}.`));
  fill(meldingen, notes);
  fill(document.getElementById('config'), el('div', { class: 'card' }, cfg));
  const rows = st.adapters.map((a) => {
    const [ctext, ckind] = CIRCUIT[a.circuit] || [a.circuit, 'info'];
    const last = a.last;
    return el('tr', { dataset: { adapter: a.id } },
      el('th', { scope: 'row' }, a.id, el('span', { class: 'hint' }, `${a.organisation_name || a.organisation} · ${a.protocol}`)),
      el('td', {}, last ? badge(last.status, SOURCE[last.status] || 'info') : '—', last && last.error ? el('span', { class: 'hint' }, last.error) : null),
      el('td', { class: 'num' }, last ? `${last.latency_ms} ms` : '—'),
      el('td', {}, last ? formatMoment(last.at) : '—'),
      el('td', {}, badge(ctext, ckind)),
      el('td', { class: 'num' }, pct(a.cache?.hit_ratio), el('span', { class: 'hint' }, `${a.cache?.hits ?? 0} treffers, ${a.cache?.misses ?? 0} missers, ${a.cache?.joined ?? 0} gedeeld, ${a.cache?.stale ?? 0} verouderd`)));
  });
  fill(document.getElementById('bronnen'), el('div', { class: 'table-wrap' }, el('table', {},
    el('caption', {}, `${st.adapters.length} adapters`),
    el('thead', {}, el('tr', {}, ['Adapter', 'Laatste status', 'Latentie', 'Wanneer', 'Circuit', 'Cache-treffers'].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, rows))));
  document.getElementById('bijgewerkt').textContent = `Bijgewerkt om ${formatMoment(new Date().toISOString())}.`;
}

async function refresh() {
  const token = sessionStorage.getItem(KEY);
  if (!token) return;
  try {
    const { data } = await api('/admin/status', { token });
    render(data);
    form.hidden = true;
    statusBox.hidden = false;
  } catch (e) {
    if (e.status === 401 || e.status === 403) {
      sessionStorage.removeItem(KEY);
      form.hidden = false;
      statusBox.hidden = true;
      fill(meldingen, notice('error', 'Dit token wordt niet geaccepteerd.', 'Controleer het beheertoken.'));
      document.getElementById('token').focus();
    } else {
      fill(meldingen, problemNotice(e, 'De status kon niet worden opgehaald.'));
    }
  }
}

function schedule() {
  clearInterval(timer);
  if (document.getElementById('auto').checked) timer = setInterval(refresh, 5000);
}

form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const t = document.getElementById('token').value.trim();
  if (!t) {
    fill(meldingen, notice('error', 'Vul het beheertoken in.'));
    return;
  }
  sessionStorage.setItem(KEY, t);
  document.getElementById('token').value = '';
  refresh().then(schedule);
});
document.getElementById('vernieuw').addEventListener('click', refresh);
document.getElementById('auto').addEventListener('change', schedule);
document.getElementById('afmelden').addEventListener('click', () => {
  sessionStorage.removeItem(KEY);
  clearInterval(timer);
  statusBox.hidden = true;
  form.hidden = false;
});
// The header: just the name, no portal navigation (operators may run without portals).
fill(document.querySelector('header.site'), el('div', { class: 'inner' }, el('span', { class: 'brand' }, 'ketenportaal · beheer')));
refresh().then(schedule);

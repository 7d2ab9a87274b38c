// ketenportaal reference portals: what every page shares. Plain ES module, no build step.
// Pages talk only to the public API, with the bearer token kept in this tab's sessionStorage.
// All text from the API goes into the page as text nodes (never as HTML).

const SESSION_KEY = 'ketenportaal.sessie';

/** The signed-in person in this tab, or null. */
export const session = {
  get() {
    try {
      const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
      if (s && s.expires_at && Date.now() > s.expires_at) {
        sessionStorage.removeItem(SESSION_KEY);
        return null;
      }
      return s;
    } catch {
      return null;
    }
  },
  set(s) {
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
  },
  clear() {
    sessionStorage.removeItem(SESSION_KEY);
  },
};

/** An API answer that was not 2xx: `status`, and the problem+json document when there is one. */
export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

/**
 * Calls the gateway. `opts.json` is sent as a JSON body; `opts.token` overrides the session's
 * token (false: none). Answers the parsed JSON, or throws ApiError.
 */
export async function api(path, opts = {}) {
  const headers = Object.assign({ Accept: 'application/json' }, opts.headers || {});
  const token = opts.token === undefined ? session.get()?.token : opts.token;
  if (token) headers.Authorization = `Bearer ${token}`;
  let body;
  if (opts.json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.json);
  }
  let resp;
  try {
    resp = await fetch(path, { method: opts.method || (body ? 'POST' : 'GET'), headers, body });
  } catch (e) {
    throw new ApiError(0, { title: 'Geen verbinding', detail: 'Het portaal is niet bereikbaar. Controleer uw verbinding en probeer het opnieuw.' });
  }
  const type = resp.headers.get('Content-Type') || '';
  const data = type.includes('json') ? await resp.json().catch(() => null) : null;
  if (!resp.ok) throw new ApiError(resp.status, data);
  return { data, status: resp.status, headers: resp.headers };
}

/** Builds an element: el('p', {class: 'x'}, 'text', child, ...). */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/** Replaces the children of `node`. */
export function fill(node, ...children) {
  node.replaceChildren();
  for (const c of children.flat(Infinity)) {
    if (c !== undefined && c !== null && c !== false) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// ---------------------------------------------------------------------------------------------
// Dutch formatting

const MONTHS = ['januari', 'februari', 'maart', 'april', 'mei', 'juni', 'juli', 'augustus',
  'september', 'oktober', 'november', 'december'];
const TZ = 'Europe/Amsterdam';

/** '2026-03-01' (or a prefix: '2026', '2026-03') in words. */
export function formatDate(s) {
  const m = /^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?$/.exec(String(s));
  if (!m) return String(s);
  if (!m[2]) return m[1];
  if (!m[3]) return `${MONTHS[Number(m[2]) - 1]} ${m[1]}`;
  return `${Number(m[3])} ${MONTHS[Number(m[2]) - 1]} ${m[1]}`;
}

/** An instant as '13:42' (today) or '27 november 2026, 13:42'. */
export function formatMoment(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const time = d.toLocaleTimeString('nl-NL', { hour: '2-digit', minute: '2-digit', timeZone: TZ });
  const day = d.toLocaleDateString('nl-NL', { day: 'numeric', month: 'long', year: 'numeric', timeZone: TZ });
  const today = new Date().toLocaleDateString('nl-NL', { day: 'numeric', month: 'long', year: 'numeric', timeZone: TZ });
  return day === today ? time : `${day}, ${time}`;
}

const euro = new Intl.NumberFormat('nl-NL', { style: 'currency', currency: 'EUR' });

const LABELS = {
  bsn: 'BSN', aow_datum: 'AOW-datum', geslachtsnaam: 'Achternaam', voorvoegsel: 'Tussenvoegsel',
  voornamen: 'Voornamen', iban: 'IBAN', geboortedatum: 'Geboortedatum', huisnummer: 'Huisnummer',
  telefoon: 'Telefoonnummer', leeftijd: 'Leeftijd', id: 'Kenmerk', service: 'Dienst',
  title: 'Onderwerp', organisation: 'Organisatie', open: 'Loopt nog', reference: 'Zaaknummer',
  submitted: 'Ingediend', updated: 'Bijgewerkt',
};

/** A field name as a label: 'bedrag_per_maand' -> 'Bedrag per maand'. */
export function label(field) {
  if (LABELS[field]) return LABELS[field];
  const s = String(field).replace(/[_-]+/g, ' ');
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** A field's value for people to read. */
export function formatValue(field, v) {
  if (v === null || v === undefined || v === '') return '—';
  if (typeof v === 'boolean') return v ? 'ja' : 'nee';
  // Amounts come as decimal text with the source's digits ("2150.60", see docs/api.md).
  const money = /^bedrag|inkomen|^toeslag/.test(field);
  if (money && typeof v === 'string' && /^-?\d+(\.\d+)?$/.test(v)) return euro.format(Number(v));
  if (typeof v === 'number' && money) return euro.format(v);
  if (typeof v === 'number' && Number.isInteger(v)) return String(v);
  if (typeof v === 'number') return v.toLocaleString('nl-NL');
  if (typeof v === 'string' && /^\d{4}-\d{2}-\d{2}T/.test(v)) return formatMoment(v);
  if (typeof v === 'string' && /^\d{4}-\d{2}(-\d{2})?$/.test(v)) return formatDate(v);
  if (Array.isArray(v)) return v.map((x) => formatValue(field, x)).join(', ');
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

export const SECTION_TITLES = {
  persoon: 'Persoonsgegevens',
  uitkeringen: 'Uitkeringen',
  toeslagen: 'Toeslagen',
  inkomen: 'Inkomen',
  zaken: 'Lopende zaken en aanvragen',
};

export const STATUS_TEXT = {
  received: 'ontvangen, wordt doorgestuurd',
  delivered: 'afgeleverd',
  rejected: 'afgewezen door de organisatie',
  failed: 'niet afgeleverd',
};

// ---------------------------------------------------------------------------------------------
// Organisations and sources

let orgNames = null;

/** Organisation id -> display name (public `/v1/organisations`, fetched once). */
export async function organisations() {
  if (!orgNames) {
    orgNames = { ketenportaal: 'dit portaal' };
    try {
      const { data } = await api('/v1/organisations', { token: false });
      for (const o of data.organisations) orgNames[o.id] = o.name;
    } catch {
      /* names are a nicety: ids stay readable */
    }
  }
  return orgNames;
}

export function orgName(names, id) {
  return (names && names[id]) || id;
}

const BAD = new Set(['unavailable', 'error', 'timeout']);

/**
 * Notices about sources that did not answer: one per organisation, the worst case first.
 * Stale: "UWV is op dit moment niet bereikbaar; gegevens van 10:42".
 */
export function sourceNotices(dossier, names) {
  const byOrg = new Map();
  for (const s of dossier.sources || []) {
    if (!BAD.has(s.status) && s.status !== 'stale') continue;
    const cur = byOrg.get(s.organisation);
    // One organisation, several sources: a missing answer outweighs an old one.
    if (!cur || (BAD.has(s.status) && !BAD.has(cur.status))) byOrg.set(s.organisation, s);
  }
  const out = [];
  for (const [org, s] of byOrg) {
    const name = orgName(names, org);
    if (s.status === 'stale') {
      const when = s.fetched_at ? formatMoment(s.fetched_at) : 'eerder';
      out.push(notice('warn', `${name} is op dit moment niet bereikbaar; gegevens van ${when}.`,
        'U ziet de laatst bekende gegevens. Ze kunnen inmiddels zijn veranderd.', { source: org, status: 'stale' }));
    } else {
      out.push(notice('error', `${name} is op dit moment niet bereikbaar.`,
        `De gegevens van ${name} ontbreken daarom in dit overzicht. Probeer het later opnieuw.`, { source: org, status: s.status }));
    }
  }
  return out;
}

/** A notice box; `kind` is info, ok, warn or error. */
export function notice(kind, title, text, data) {
  return el('div', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status', dataset: data },
    el('p', {}, el('strong', {}, title)), text ? el('p', {}, text) : null);
}

/** A refusal or failure from the API as a notice. */
export function problemNotice(e, what) {
  const p = (e && e.problem) || {};
  let title = what || 'Dat lukte niet.';
  if (e.status === 401) {
    // The token expired or was refused: forget it, and offer the way back in.
    session.clear();
    return el('div', { class: 'notice error', role: 'alert' },
      el('p', {}, el('strong', {}, 'U bent niet (meer) aangemeld.')),
      el('p', {}, el('a', { href: '/portaal/aanmelden.html' }, 'Opnieuw aanmelden')));
  }
  else if (e.status === 403) title = 'Geweigerd: u hebt geen toegang tot deze gegevens.';
  else if (e.status === 404) title = 'Niet gevonden.';
  else if (e.status === 502 || e.status === 504) title = 'De organisaties achter het portaal antwoorden nu niet.';
  else if (e.status === 503) title = 'Het portaal kan uw verzoek nu niet veilig verwerken. Probeer het later opnieuw.';
  return notice('error', title, p.detail || e.message);
}

function sourceLine(src, names, prefix) {
  if (!src) return null;
  const name = orgName(names, src.organisation);
  const when = src.fetched_at ? `, gegevens van ${formatMoment(src.fetched_at)}` : '';
  const stale = src.status === 'stale' ? ' (laatst bekend; bron niet bereikbaar)' : '';
  return `${prefix || 'Bron'}: ${name}${when}${stale}`;
}

/** Known fields in a natural reading order; the rest follow alphabetically. */
const FIELD_ORDER = ['voornamen', 'voorvoegsel', 'geslachtsnaam', 'geboortedatum', 'geslacht',
  'leeftijd', 'bsn', 'straat', 'huisnummer', 'postcode', 'woonplaats', 'telefoon', 'aow_datum',
  'soort', 'status', 'ingangsdatum', 'einddatum', 'bedrag_per_maand', 'bedrag', 'jaar',
  'title', 'organisation', 'reference', 'submitted', 'updated'];

function ordered(rec) {
  const rank = (k) => { const i = FIELD_ORDER.indexOf(k); return i < 0 ? FIELD_ORDER.length : i; };
  return Object.entries(rec).filter(([k]) => !k.startsWith('_'))
    .sort(([a], [b]) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
}

/** First letter upper case. */
export function capital(s) {
  const t = String(s);
  return t.charAt(0).toUpperCase() + t.slice(1);
}

/** Renders every section of a dossier answer into `container`. */
export function renderDossier(container, dossier, names, opts = {}) {
  const sources = new Map((dossier.sources || []).map((s) => [s.adapter, s]));
  const conflicts = dossier.conflicts || [];
  const sections = dossier.sections || {};
  const order = Object.keys(SECTION_TITLES).filter((k) => k in sections)
    .concat(Object.keys(sections).filter((k) => !(k in SECTION_TITLES)));
  const parts = [];
  for (const name of order) {
    if (opts.skip && opts.skip.includes(name)) continue;
    const sec = sections[name];
    const id = `sectie-${name}`;
    const body = Array.isArray(sec)
      ? renderList(name, sec, sources, names, conflicts)
      : renderSingle(name, sec, sources, names, conflicts);
    parts.push(el('section', { 'aria-labelledby': id, class: 'dossier-section', dataset: { section: name } },
      el('h2', { id }, SECTION_TITLES[name] || label(name)), body));
  }
  fill(container, parts);
}

function conflictText(c, names, sources) {
  return 'Bronnen verschillen: ' + c.values.map(([adapter, v]) => {
    const s = sources.get(adapter);
    return `${s ? orgName(names, s.organisation) : adapter} (${adapter}): ${formatValue(c.field, v)}`;
  }).join('; ');
}

function renderSingle(section, rec, sources, names, conflicts) {
  if (!rec || Object.keys(rec).filter((k) => !k.startsWith('_')).length === 0) {
    return el('p', { class: 'muted' }, 'Geen gegevens.');
  }
  const prov = rec._provenance || {};
  const dl = el('dl', { class: 'fields' });
  for (const [field, value] of ordered(rec)) {
    const c = conflicts.find((x) => x.section === section && x.field === field && !x.key);
    const src = sources.get(prov[field]);
    const dt = el('dt', { class: c ? 'conflict' : null }, label(field));
    const dd = el('dd', { class: c ? 'conflict' : null, dataset: { field } },
      formatValue(field, value),
      c ? el('span', { class: 'conflict-detail' }, conflictText(c, names, sources)) : null,
      src ? el('span', { class: 'prov' }, sourceLine(src, names)) : null);
    dl.append(dt, dd);
  }
  return el('div', { class: 'card' }, dl);
}

function keyMatches(c, item, section) {
  if (!c.key || c.section !== section) return false;
  const vals = Object.values(item);
  return c.key.every((k) => vals.some((v) => JSON.stringify(v) === JSON.stringify(k)));
}

function renderList(section, items, sources, names, conflicts) {
  if (!items.length) {
    return el('p', { class: 'muted' }, section === 'zaken' ? 'U hebt geen lopende zaken of aanvragen.' : 'Geen gegevens.');
  }
  return el('ul', { class: 'plain cards' }, items.map((item) => {
    const src = sources.get(item._source);
    const mine = conflicts.filter((c) => keyMatches(c, item, section));
    const dl = el('dl', { class: 'fields' });
    for (const [field, value] of ordered(item)) {
      const c = mine.find((x) => x.field === field);
      let shown = formatValue(field, value);
      if (section === 'zaken' && field === 'status') shown = STATUS_TEXT[value] || shown;
      if (section === 'zaken' && field === 'organisation') shown = orgName(names, value);
      dl.append(el('dt', { class: c ? 'conflict' : null }, label(field)),
        el('dd', { class: c ? 'conflict' : null, dataset: { field } }, shown,
          c ? el('span', { class: 'conflict-detail' }, conflictText(c, names, sources)) : null));
    }
    const heading = item.soort || item.title || item.service || null;
    return el('li', { class: 'card' }, heading ? el('h3', {}, capital(formatValue('soort', heading))) : null, dl,
      src ? el('p', { class: 'source' }, sourceLine(src, names)) : null);
  }));
}

// ---------------------------------------------------------------------------------------------
// Services (themaportaal, medewerkersportaal)

function serviceCard(svc, { apply, client } = {}) {
  const relevant = svc.relevant === true;
  const badge = svc.relevant === undefined ? null
    : el('span', { class: `badge ${relevant ? 'ok' : 'info'}` }, relevant ? (client ? 'Past bij de situatie van de klant' : 'Past bij uw situatie') : (client ? 'Nu waarschijnlijk niet van toepassing' : 'Nu waarschijnlijk niet voor u'));
  const button = apply && svc.can_apply
    ? el('div', { class: 'actions' }, el('button', { type: 'button', class: relevant ? null : 'secondary', onclick: () => apply(svc.id) }, 'Aanvragen', el('span', { class: 'visually-hidden' }, `: ${svc.title}`)))
    : null;
  return el('li', { class: `card service${relevant ? ' relevant' : ''}`, dataset: { service: svc.id, relevant: String(svc.relevant) } },
    el('h3', {}, svc.title), badge,
    el('p', {}, svc.description),
    svc.reason ? el('p', { class: 'reason' }, el('strong', {}, 'Waarom: '), svc.reason) : null,
    el('p', { class: 'source' }, `Aangeboden door ${svc.organisation_name || svc.organisation}`),
    button);
}

/**
 * Services as cards, relevant ones first. `opts.apply(id)` adds an apply button where a service
 * can be applied for; `opts.client` words it for an employee looking at a client.
 */
export function serviceList(services, opts = {}) {
  // Relevant services first, in the configured order otherwise.
  const sorted = [...services].sort((a, b) => Number(b.relevant === true) - Number(a.relevant === true));
  return el('ul', { class: 'plain cards' }, sorted.map((s) => serviceCard(s, opts)));
}

/** One life event as a card with its services; `prefix` keeps heading ids unique per page. */
export function lifeEventCard(e, prefix, opts) {
  const id = `${prefix}-${e.id}`;
  return el('section', { class: 'card', 'aria-labelledby': id, dataset: { lifeEvent: e.id } },
    el('h3', { id }, e.title), el('p', {}, e.description), serviceList(e.services, opts));
}

// ---------------------------------------------------------------------------------------------
// Page frame

const NAV = [
  ['klant.html', 'Mijn overzicht', 'citizen'],
  ['thema.html', 'Thema\'s en levensgebeurtenissen', 'any'],
  ['medewerker.html', 'Medewerkersportaal', 'employee'],
];

/**
 * Fills `<header class="site">` with the name, the navigation and who is signed in, and the
 * demo banner. `base` is where the portal pages are ('/portaal/').
 */
export function frame(current, base = '/portaal/') {
  const s = session.get();
  const header = document.querySelector('header.site');
  if (!header) return s;
  const nav = el('nav', { 'aria-label': 'Hoofdmenu' }, el('ul', {}, NAV
    .filter(([, , who]) => who === 'any' || !s || (who === 'citizen') === (s.actor === 'citizen'))
    .map(([href, text]) => el('li', {}, el('a', { href: base + href, 'aria-current': href === current ? 'page' : null }, text)))));
  const who = el('div', { class: 'who' });
  if (s) {
    who.append(el('span', {}, `Aangemeld: ${s.label}`),
      el('button', { type: 'button', onclick: () => { session.clear(); location.href = base; } }, 'Afmelden'));
  } else if (current !== 'aanmelden.html') {
    who.append(el('a', { href: base + 'aanmelden.html', class: 'signin', style: null }, 'Aanmelden'));
  }
  fill(header, el('div', { class: 'inner' }, el('a', { class: 'brand', href: base }, 'ketenportaal'), nav, who));
  if (s && s.demo && !document.querySelector('.demo-banner')) {
    header.append(el('div', { class: 'demo-banner' }, el('p', {},
      'Demo-omgeving: fictieve personen en gegevens, aangemeld zonder DigiD of eHerkenning.')));
  }
  return s;
}

/** When nobody (or the wrong kind of person) is signed in: a notice with the way in. */
export function needSignIn(container, who) {
  const text = who === 'employee'
    ? 'Meld u aan als medewerker om een klantdossier te raadplegen.'
    : 'Meld u aan om uw eigen gegevens te zien.';
  fill(container, notice('info', 'U bent niet aangemeld.', text),
    el('p', {}, el('a', { class: 'button', href: '/portaal/aanmelden.html' }, 'Aanmelden')));
}

/** Reads `?key=` style state never: BSNs stay out of URLs. A fresh random idempotency key. */
export function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

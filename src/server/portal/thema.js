// Themaportaal: themes and life events; for a signed-in citizen, which services fit their
// situation and why. A service is applied for through a form generated from its JSON Schema,
// and the application's delivery to the owning organisation is followed live.
import {
  api, el, fill, frame, organisations, problemNotice, sourceNotices, notice, label, newKey,
  STATUS_TEXT, formatMoment, serviceList, lifeEventCard,
} from './portaal.js';

const s = frame('thema.html');
const citizen = s && s.actor === 'citizen';
const meldingen = document.getElementById('meldingen');
let names = {};

async function lifeEvents() {
  const box = document.getElementById('gebeurtenissen');
  document.getElementById('voor-u').hidden = false;
  try {
    const { data } = await api('/v1/me/life-events');
    fill(meldingen, sourceNotices(data, names));
    const events = data.life_events || [];
    if (!events.length) {
      fill(box, el('p', { class: 'muted' }, 'Er is nu geen levensgebeurtenis die uit uw gegevens blijkt.'));
      return;
    }
    fill(box, events.map((e) => lifeEventCard(e, 'le', { apply: citizen ? openApplication : null })));
  } catch (e) {
    fill(box, problemNotice(e, 'Uw situatie kon niet worden bekeken.'));
  }
}

async function openTheme(id) {
  const section = document.getElementById('thema');
  const heading = document.getElementById('thema-kop');
  const box = document.getElementById('diensten');
  section.hidden = false;
  fill(box, el('p', {}, 'Bezig met laden…'));
  try {
    const { data } = citizen ? await api(`/v1/me/themes/${encodeURIComponent(id)}`) : await api(`/v1/themes/${encodeURIComponent(id)}`, { token: false });
    const theme = data.theme || data;
    heading.textContent = theme.title;
    document.getElementById('thema-omschrijving').textContent = theme.description;
    const parts = [];
    if (citizen) parts.push(sourceNotices(data, names));
    else parts.push(notice('info', 'Meld u aan om te zien welke diensten bij u passen.'));
    parts.push(serviceList(data.services || [], { apply: citizen ? openApplication : null }));
    fill(box, parts);
  } catch (e) {
    fill(box, problemNotice(e, 'Dit thema kon niet worden geladen.'));
  }
  heading.focus();
}

async function themes() {
  const list = document.getElementById('themas');
  try {
    const { data } = await api('/v1/themes', { token: false });
    fill(list, data.themes.map((t) => el('li', { class: 'card' },
      el('h3', {}, t.title), el('p', {}, t.description),
      el('button', { type: 'button', class: 'secondary', 'aria-controls': 'thema', onclick: () => openTheme(t.id) }, 'Bekijk', el('span', { class: 'visually-hidden' }, ` ${t.title}`)))));
  } catch (e) {
    fill(list, el('li', {}, problemNotice(e, 'De thema\'s konden niet worden geladen.')));
  }
}

// ---------------------------------------------------------------------------------------------
// Application form from a JSON Schema

const REASONS = {
  required: 'Vul dit veld in.',
  pattern: 'Het formaat klopt niet.',
  enum: 'Kies een van de mogelijkheden.',
  maxLength: 'Dit is te lang.',
  minLength: 'Dit is te kort.',
  type: 'Dit is geen geldige waarde.',
  format: 'Dit is geen geldige waarde.',
  minimum: 'Dit is te laag.',
  maximum: 'Dit is te hoog.',
  additionalProperties: 'Dit veld hoort niet bij deze aanvraag.',
};

function isDate(p) {
  return p.format === 'date' || (typeof p.pattern === 'string' && p.pattern.includes('[0-9]{4}-[0-9]{2}-[0-9]{2}'));
}

function fieldFor(name, prop, required) {
  const id = `veld-${name}`;
  const title = prop.title || label(name);
  const hintText = [prop.description, prop.examples && prop.examples.length ? `Bijvoorbeeld: ${prop.examples[0]}` : null].filter(Boolean).join(' ');
  const hint = hintText ? el('span', { class: 'hint', id: `${id}-hint` }, hintText) : null;
  const error = el('span', { class: 'error-text', id: `${id}-error`, hidden: true });
  const described = [hint ? `${id}-hint` : null, `${id}-error`].filter(Boolean).join(' ');
  const req = required ? { 'aria-required': 'true' } : {};
  const suffix = required ? '' : ' (niet verplicht)';
  if (Array.isArray(prop.enum) && prop.enum.length <= 4) {
    return el('fieldset', { class: 'field', dataset: { name }, 'aria-describedby': described },
      el('legend', {}, title + suffix), hint, error,
      prop.enum.map((v, i) => el('label', { class: 'check', for: `${id}-${i}` },
        el('input', { type: 'radio', name, id: `${id}-${i}`, value: String(v), ...req }), label(String(v)))));
  }
  let input;
  if (Array.isArray(prop.enum)) {
    input = el('select', { id, name, ...req }, el('option', { value: '' }, '— Kies —'), prop.enum.map((v) => el('option', { value: String(v) }, label(String(v)))));
  } else if (prop.type === 'boolean') {
    return el('div', { class: 'field', dataset: { name } }, error,
      el('label', { class: 'check', for: id }, el('input', { type: 'checkbox', id, name, 'aria-describedby': described }), title));
  } else if (prop.type === 'integer' || prop.type === 'number') {
    input = el('input', { type: 'number', id, name, step: prop.type === 'integer' ? '1' : 'any', inputmode: prop.type === 'integer' ? 'numeric' : 'decimal', min: prop.minimum, max: prop.maximum, ...req });
  } else if (isDate(prop)) {
    input = el('input', { type: 'date', id, name, ...req });
  } else if ((prop.maxLength || 0) > 120) {
    input = el('textarea', { id, name, maxlength: prop.maxLength, ...req });
  } else {
    input = el('input', { type: 'text', id, name, maxlength: prop.maxLength, autocomplete: name === 'iban' ? 'off' : null, spellcheck: name === 'iban' ? 'false' : null, ...req });
  }
  input.setAttribute('aria-describedby', described);
  return el('div', { class: 'field', dataset: { name } }, el('label', { for: id }, title + suffix), hint, error, input);
}

function readForm(form, schema) {
  const data = {};
  for (const [name, prop] of Object.entries(schema.properties || {})) {
    if (prop.type === 'boolean') {
      data[name] = form.elements[name].checked;
      continue;
    }
    const v = form.elements[name]?.value?.trim?.() ?? '';
    if (v === '') continue;
    if (prop.type === 'integer' || prop.type === 'number') {
      const n = Number(v.replace(',', '.'));
      data[name] = Number.isNaN(n) ? v : n;
    } else {
      data[name] = name === 'iban' ? v.replace(/\s+/g, '').toUpperCase() : v;
    }
  }
  return data;
}

function showErrors(form, summary, problem) {
  form.querySelectorAll('.error-text').forEach((e) => { e.hidden = true; e.textContent = ''; });
  form.querySelectorAll('[aria-invalid]').forEach((e) => e.removeAttribute('aria-invalid'));
  const items = [];
  for (const p of problem.invalidParams || []) {
    const name = String(p.name || '').replace(/^data\/?/, '').split('/')[0];
    const text = REASONS[p.code] || p.reason;
    const field = form.querySelector(`[data-name="${CSS.escape(name)}"]`);
    if (field) {
      const err = field.querySelector('.error-text');
      err.textContent = text;
      err.hidden = false;
      field.querySelectorAll('input, select, textarea').forEach((i) => i.setAttribute('aria-invalid', 'true'));
      const first = field.querySelector('input, select, textarea');
      items.push(el('li', {}, el('a', { href: `#${first ? first.id : ''}`, onclick: (ev) => { ev.preventDefault(); first?.focus(); } }, `${field.querySelector('label, legend')?.textContent || name}: ${text}`)));
    } else {
      items.push(el('li', {}, `${name || 'Aanvraag'}: ${text}`));
    }
  }
  fill(summary, el('div', { class: 'notice error', role: 'alert', tabindex: '-1' },
    el('p', {}, el('strong', {}, 'Er is een probleem met uw aanvraag.')), el('ul', {}, items)));
  summary.hidden = false;
  summary.firstChild.focus();
}

async function followStatus(id, box, orgNameText) {
  const line = el('p', { id: 'aanvraag-status', role: 'status', dataset: { status: 'received' } });
  const update = (app) => {
    line.dataset.status = app.status;
    const parts = [`Status: ${STATUS_TEXT[app.status] || app.status}.`];
    if (app.status === 'delivered') parts.push(`Afgeleverd bij ${orgNameText}${app.reference ? `; uw kenmerk daar is ${app.reference}` : ''}.`);
    if (app.status === 'rejected' && app.reason) parts.push(`Reden: ${app.reason}`);
    if (app.status === 'failed') parts.push('Het portaal kon de aanvraag niet afleveren; de beheerder is gewaarschuwd. U hoeft niets opnieuw in te dienen.');
    if (app.updated) parts.push(`(bijgewerkt ${formatMoment(app.updated)})`);
    line.textContent = parts.join(' ');
  };
  box.append(line);
  update({ status: 'received' });
  for (let i = 0; i < 120; i++) {
    try {
      const { data } = await api(`/v1/applications/${encodeURIComponent(id)}`);
      update(data);
      if (data.status !== 'received') return;
    } catch (e) {
      line.textContent = 'De status kon niet worden opgehaald; uw aanvraag is wel ontvangen.';
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function openApplication(serviceId) {
  const section = document.getElementById('aanvraag');
  const heading = document.getElementById('aanvraag-kop');
  const box = document.getElementById('aanvraag-inhoud');
  section.hidden = false;
  let svc;
  try {
    ({ data: svc } = await api(`/v1/services/${encodeURIComponent(serviceId)}`, { token: false }));
  } catch (e) {
    fill(box, problemNotice(e, 'Het aanvraagformulier kon niet worden geladen.'));
    return;
  }
  heading.textContent = `Aanvragen: ${svc.title}`;
  const schema = svc.application?.schema || {};
  const required = schema.required || [];
  // Required fields in the schema's order, then the optional ones.
  const order = required.concat(Object.keys(schema.properties || {}).filter((k) => !required.includes(k)));
  const summary = el('div', { hidden: true });
  const key = newKey();
  const submit = el('button', { type: 'submit' }, 'Aanvraag versturen');
  const form = el('form', { novalidate: true, id: 'aanvraagformulier', 'aria-labelledby': 'aanvraag-kop' },
    el('p', {}, `Uw aanvraag gaat naar ${svc.organisation_name || svc.organisation}. Uw BSN wordt automatisch meegestuurd.`),
    order.map((name) => fieldFor(name, schema.properties[name] || {}, required.includes(name))),
    el('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    try {
      const { data } = await api('/v1/me/applications', {
        json: { service: serviceId, data: readForm(form, schema) },
        headers: { 'Idempotency-Key': key },
      });
      const done = el('div', {},
        notice('ok', 'Uw aanvraag is ontvangen.', `Kenmerk: ${data.id}. Het portaal levert de aanvraag af bij ${svc.organisation_name}; u kunt de status hieronder volgen, en later onder "Lopende zaken" in uw overzicht.`));
      fill(box, done);
      heading.focus();
      followStatus(data.id, done, svc.organisation_name || svc.organisation);
    } catch (e) {
      submit.disabled = false;
      if (e.status === 422) showErrors(form, summary, e.problem);
      else {
        fill(summary, problemNotice(e, 'Uw aanvraag kon niet worden verstuurd.'));
        summary.hidden = false;
      }
    }
  });
  fill(box, summary, form);
  heading.focus();
}

async function main() {
  names = await organisations();
  const jobs = [themes()];
  if (citizen) jobs.push(lifeEvents());
  else if (!s) fill(meldingen, notice('info', 'U bent niet aangemeld.', 'U ziet alle thema\'s; meld u aan om te zien wat bij u past en om iets aan te vragen.'));
  await Promise.all(jobs);
}

main();

// Medewerkersportaal: an employee picks a view (role) and a purpose, enters a BSN in the form
// (never in a URL) and sees the client's dossier through that view, conflicts highlighted.
import {
  api, el, fill, frame, needSignIn, organisations, problemNotice, renderDossier, sourceNotices,
  notice, formatMoment, lifeEventCard,
} from './portaal.js';

const s = frame('medewerker.html');
const meldingen = document.getElementById('meldingen');
const form = document.getElementById('zoek');
const viewSel = document.getElementById('view');
const purposeSel = document.getElementById('purpose');
const bsnInput = document.getElementById('bsn');
const resultaat = document.getElementById('resultaat');
let views = [];

function setError(input, box, text) {
  box.textContent = text || '';
  box.hidden = !text;
  if (text) input.setAttribute('aria-invalid', 'true');
  else input.removeAttribute('aria-invalid');
}

function showPurposes() {
  const v = views.find((x) => x.id === viewSel.value);
  document.getElementById('view-hint').textContent = v ? v.description : '';
  fill(purposeSel, el('option', { value: '' }, '— Kies een doel —'),
    (v ? v.purposes : []).map((p) => el('option', { value: p.id }, `${p.description} (${p.id})`)));
}

async function consult(ev) {
  ev.preventDefault();
  setError(bsnInput, document.getElementById('bsn-error'), '');
  setError(purposeSel, document.getElementById('purpose-error'), '');
  const bsn = bsnInput.value.replace(/\s+/g, '');
  if (!/^\d{9}$/.test(bsn)) {
    setError(bsnInput, document.getElementById('bsn-error'), 'Vul een BSN van 9 cijfers in.');
    bsnInput.focus();
    return;
  }
  const headers = {};
  // No purpose chosen: the request goes without one, and the gateway decides (it refuses).
  if (purposeSel.value) headers['X-Purpose'] = purposeSel.value;
  if (document.getElementById('fresh').checked) headers['Cache-Control'] = 'no-cache';
  fill(resultaat, el('p', {}, 'Het dossier wordt opgehaald…'));
  resultaat.setAttribute('aria-busy', 'true');
  const names = await organisations();
  try {
    const { data } = await api('/v1/dossiers', { json: { bsn, view: viewSel.value }, headers });
    const notes = sourceNotices(data, names);
    const n = (data.conflicts || []).length;
    if (n) {
      notes.push(notice('warn', n === 1 ? '1 gegeven verschilt tussen bronnen.' : `${n} gegevens verschillen tussen bronnen.`,
        'Gemarkeerd hieronder; de gezaghebbende bron staat voorop.'));
    }
    const purpose = purposeSel.selectedOptions[0]?.textContent || '';
    const body = el('div', {});
    fill(resultaat,
      el('h2', { id: 'dossier-kop', tabindex: '-1' }, `Dossier van BSN ${data.subject?.bsn || bsn}`),
      el('p', { class: 'muted' }, `Weergave ${data.view}, doel: ${purpose}. Opgehaald ${formatMoment(data.generated_at)}; deze raadpleging is vastgelegd.`),
      notes, body);
    renderDossier(body, data, names, { conflicts: true });
    body.append(lifeEventsPanel(bsn, viewSel.value, headers));
    document.getElementById('dossier-kop').focus();
  } catch (e) {
    // 400: not 9 digits; 422: the 11-proef fails.
    if ((e.status === 400 || e.status === 422) && /bsn/i.test(JSON.stringify(e.problem))) {
      setError(bsnInput, document.getElementById('bsn-error'), 'Dit is geen geldig BSN (de elfproef klopt niet).');
      fill(resultaat);
      bsnInput.focus();
    } else {
      if (e.status === 403 && !purposeSel.value) {
        setError(purposeSel, document.getElementById('purpose-error'), 'Kies het doel van deze raadpleging.');
      }
      fill(resultaat, problemNotice(e, 'Het dossier kon niet worden opgehaald.'));
    }
  } finally {
    resultaat.removeAttribute('aria-busy');
  }
}

/**
 * On request only (it is a second consult, audited like the first): the client's life events
 * through the same view and purpose, with the services that fit and why.
 */
function lifeEventsPanel(bsn, view, headers) {
  const box = el('div', { id: 'klant-gebeurtenissen', 'aria-live': 'polite' });
  const button = el('button', { type: 'button', class: 'secondary' }, 'Toon levensgebeurtenissen en passende diensten');
  button.addEventListener('click', async () => {
    button.disabled = true;
    fill(box, el('p', {}, 'Bezig met ophalen…'));
    try {
      const { data } = await api('/v1/dossiers/life-events', { json: { bsn, view }, headers });
      const events = data.life_events || [];
      fill(box, events.length
        ? events.map((e) => lifeEventCard(e, 'kle', { client: true }))
        : el('p', { class: 'muted' }, 'Uit de gegevens in deze weergave blijkt geen levensgebeurtenis.'));
    } catch (e) {
      fill(box, problemNotice(e, 'De levensgebeurtenissen konden niet worden opgehaald.'));
    } finally {
      button.disabled = false;
    }
  });
  return el('section', { 'aria-labelledby': 'klant-le-kop' },
    el('h2', { id: 'klant-le-kop' }, 'Levensgebeurtenissen van de klant'),
    el('p', {}, 'Welke diensten passen bij de situatie van de klant, en waarom. Dit is een nieuwe raadpleging met hetzelfde doel; ook die wordt vastgelegd.'),
    el('div', { class: 'actions' }, button), box);
}

async function main() {
  if (!s || s.actor !== 'employee') {
    needSignIn(resultaat, 'employee');
    return;
  }
  try {
    const { data } = await api('/v1/views');
    views = data.views || [];
  } catch (e) {
    fill(meldingen, problemNotice(e, 'Uw rollen konden niet worden opgehaald.'));
    return;
  }
  if (!views.length) {
    fill(meldingen, notice('warn', 'Uw rol geeft geen toegang tot klantdossiers.', 'Vraag uw beheerder om de juiste rol.'));
    return;
  }
  fill(viewSel, views.map((v) => el('option', { value: v.id }, v.id)));
  showPurposes();
  viewSel.addEventListener('change', showPurposes);
  form.addEventListener('submit', consult);
  form.hidden = false;
}

main();
